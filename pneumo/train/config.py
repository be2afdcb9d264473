"""The training run's settings and the `pneumo train` options, in one place.

`TrainConfig` holds every setting of a run with its default and its help text; `pneumo train`'s
parser is built from it (`add_arguments`), so a default or a help text is written once. This
module imports nothing beyond the standard library: `pneumo --help` builds every parser on the
base install (tests/pneumo/test_runtime_imports.py guards it).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

BACKENDS = ("tensorflow", "jax")
"""Keras backends `pneumo train --backend` accepts."""

GAN_SIZES = (32, 64, 96, 128, 160, 192, 224, 256)
"""Image sides (px) the GANs can generate."""

IMG_SIZE = {"cnn": 224, "seed": 148, "stem4": 224, "mobile": 224, "resnet": 224}
"""The input side each architecture trains at unless --img-size says otherwise."""


def cli(help: str, **options: object) -> dict:  # noqa: A002 - argparse's own word
    """A setting's command-line option: its help text and argparse options (flag, choices...)."""
    return {"help": help, **options}


@dataclass
class TrainConfig:
    """Everything that defines a training run (the defaults and help of `pneumo train`)."""

    data: str = field(metadata=cli('chest_xray folder (train/ [val/] [test/])'))
    out: str = field(metadata=cli('run folder (checkpoints, model, logs)'))
    epochs: int = field(default=25, metadata=cli(
        'training epochs, at most (--patience may stop earlier) (default: %(default)s)'))
    img_size: int | None = field(default=None, metadata=cli(
        'input side in pixels (default: 148 for seed, else 224)', type=int))
    arch: str = field(default='cnn', metadata=cli(
        "cnn: the project's CAM-ready CNN; stem4, mobile, resnet: cheaper CAM-ready students (stride-4 stem; VGG, inverted-residual or residual blocks; pneumo/train/model.py); seed: the seed paper's small baseline (default: %(default)s)", choices=('cnn', 'seed', 'stem4', 'mobile', 'resnet')))
    seed: int = field(default=42, metadata=cli(
        'seed of the weights, shuffling and augmentation, and of the validation split unless --split-seed (default: %(default)s)'))
    batch_size: int = field(default=32, metadata=cli(
        'images per training step (default: %(default)s)'))
    learning_rate: float = field(default=0.001, metadata=cli(
        'peak AdamW learning rate: one-epoch warm-up from a tenth of it, then cosine decay (default: %(default)s)', flag='--lr'))
    weight_decay: float = field(default=0.0001, metadata=cli(
        'AdamW weight decay (default: %(default)s)'))
    val_fraction: float = field(default=0.2, metadata=cli(
        'share of train/ held out as internal validation, grouped by patient; an official val/ folder is added to it (default: %(default)s)'))
    split_seed: int | None = field(default=None, metadata=cli(
        'seed of the patient-grouped validation split (default: --seed)', type=int))
    augment: str = field(default='full', metadata=cli(
        'none; seed (rotation/zoom/shear/flip); full (seed + acquisition) (default: %(default)s)', choices=('none', 'seed', 'full')))
    augment_off: list[str] = field(default_factory=list, metadata=cli(
        'switch one augmentation off (rotation, zoom, shear, shift, flip, brightness, contrast, gamma, noise, lowres); repeatable', flag='--no-aug', metavar='NAME'))
    augment_set: list[str] = field(default_factory=list, metadata=cli(
        'set one augmentation strength, e.g. gamma=0.5 or erasing=0.5; repeatable', flag='--aug-set', metavar='NAME=VALUE'))
    synthetic: str | None = field(default=None, metadata=cli(
        'extra training images (Kaggle layout), never validation'))
    patience: int = field(default=8, metadata=cli(
        'with --select val_auc: stop after N epochs without a better validation AUC (default: %(default)s)', metavar='N'))
    strategy: str = field(default='auto', metadata=cli(
        'how training spreads: auto (tensorflow: mirrored when there are several GPUs), mirrored (tensorflow: every GPU, else every CPU device; jax: keras.distribution.DataParallel over every JAX device), multiworker (tensorflow only: tf.distribute workers from $TF_CONFIG; the chief writes the run folder) (default: %(default)s)', choices=('auto', 'mirrored', 'multiworker')))
    cache_dir: str | None = field(default=None, metadata=cli(
        'where decoded arrays are cached (default: OUT/cache)'))
    external_val: str | None = field(default=None, metadata=cli(
        'labelled folder (NORMAL/, PNEUMONIA/) judged after every epoch and at the end, e.g. ../shared/data/external_val; never trained on and never used to pick the epoch', metavar='DIR'))
    intensity: str = field(default='none', metadata=cli(
        'per-image intensity normalisation, done by the app too (default: %(default)s)', choices=('none', 'equalize', 'stretch')))
    label_smoothing: float = field(default=0.0, metadata=cli(
        'label smoothing of the binary cross-entropy loss; 0 = off (default: %(default)s)'))
    mixup: float = field(default=0.0, metadata=cli(
        'mixup within each batch, Beta(ALPHA, ALPHA); 0 = off (default: %(default)s)', metavar='ALPHA'))
    balance: str = field(default='weights', metadata=cli(
        'class imbalance: loss weights or balanced sampling (default: %(default)s)', choices=('weights', 'sampling')))
    width: float = field(default=1.0, metadata=cli(
        'CNN channel width multiplier (default: %(default)s)'))
    select: str = field(default='val_auc', metadata=cli(
        "the run's model: best internal validation AUC, or the last epoch (default: %(default)s)", choices=('val_auc', 'last')))
    overlays: float = field(default=0.0, metadata=cli(
        'burned-in unit text (kV, time, markers) in the corners of a training image, with probability P, on both classes (pneumo/train/overlays.py) (default: %(default)s)', metavar='P'))
    backend: str = field(default='tensorflow', metadata=cli(
        'Keras backend: jax trains on a GPU machine without TensorFlow (same model and recipe; the model file exports as usual) (default: %(default)s)', choices=BACKENDS))
    teacher: str | None = field(default=None, metadata=cli(
        'distil from this ONNX model (e.g. the bundled pair, pneumo/app/models/pneumo.int8.onnx): the student learns from its logits on --teacher-views views of every training image, cached once under the cache folder (pneumo/train/distill.py)', metavar='MODEL.onnx'))
    teacher_views: int = field(default=4, metadata=cli(
        'with --teacher: views per training image (the image itself, then augmented ones) (default: %(default)s)', metavar='K'))
    temperature: float = field(default=2.0, metadata=cli(
        "with --teacher: softening temperature of the teacher's and the student's logits (default: %(default)s)", metavar='T'))
    distill_alpha: float = field(default=0.5, metadata=cli(
        "with --teacher: weight of the teacher's soft targets against the hard labels, 0..1 (default: %(default)s)", metavar='A'))
    init_from: str | None = field(default=None, metadata=cli(
        'start from the weights of another run (its folder or model.keras), e.g. to fine-tune a 224 px run at a smaller --img-size', metavar='RUN'))

    def __post_init__(self) -> None:
        if self.img_size is None:  # the architecture's own input side
            self.img_size = IMG_SIZE.get(self.arch, IMG_SIZE["cnn"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`pneumo train`'s options, one per TrainConfig field, with its default and help."""
    for f in dataclasses.fields(TrainConfig):
        meta = dict(f.metadata)
        flag = meta.pop("flag", "--" + f.name.replace("_", "-"))
        kwargs = {"dest": f.name, **meta}
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs["required"] = True
        elif f.default_factory is not dataclasses.MISSING:
            kwargs["action"] = "append"  # repeatable; None (absent) becomes []
        else:
            kwargs["default"] = f.default
            if "type" not in kwargs and type(f.default) in (int, float) and "choices" not in meta:
                kwargs["type"] = type(f.default)
        parser.add_argument(flag, **kwargs)


def from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig that `pneumo train`'s parsed options describe."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    for f in dataclasses.fields(TrainConfig):
        if f.default_factory is not dataclasses.MISSING and values[f.name] is None:
            values[f.name] = f.default_factory()
    return TrainConfig(**values)
