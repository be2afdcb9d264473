"""`pneumo gan train|sample|evaluate` (TensorFlow imported on use)."""

from __future__ import annotations

import argparse

from pneumo import extras
from pneumo.train.config import BACKENDS, GAN_SIZES

CLASS_CHOICES = ["NORMAL", "PNEUMONIA"]


def train_classes(kind: str, classes: list[str] | None, cls: str | None) -> tuple[str, ...]:
    """The classes a GAN learns: --classes (NORMAL, PNEUMONIA or both), else --class.

    The DCGAN is unconditional (one class per model, NORMAL by default); the SN-GAN is
    conditional and learns both classes unless told otherwise.
    """
    if classes:
        chosen = tuple(CLASS_CHOICES) if "both" in classes else tuple(dict.fromkeys(classes))
    elif cls:
        chosen = (cls,)
    else:
        chosen = tuple(CLASS_CHOICES) if kind == "sngan" else ("NORMAL",)
    if kind == "dcgan" and len(chosen) > 1:
        raise ValueError("the DCGAN is unconditional: train one per class (--classes NORMAL, "
                         "then --classes PNEUMONIA into another --out), or use --kind sngan")
    return chosen


def _gan_train(args: argparse.Namespace) -> int:
    import os

    if args.backend != "tensorflow":  # read by Keras when it is first imported
        os.environ["KERAS_BACKEND"] = args.backend
    from pneumo.train.gan import GanConfig, train_gan
    from pneumo.train.trainer import check_backend

    check_backend(args.backend)
    cfg = GanConfig(data=args.data, out=args.out, kind=args.kind,
                    classes=train_classes(args.kind, args.classes, args.cls),
                    img_size=args.img_size, steps=args.steps, batch_size=args.batch_size,
                    seed=args.seed, sample_every=args.sample_every,
                    checkpoint_every=args.checkpoint_every or args.sample_every,
                    log_every=args.log_every, eval_every=args.eval_every, eval_n=args.eval_n,
                    eval_model=args.eval_model)
    train_gan(cfg, resume=args.resume)
    return 0


def _gan_sample(args: argparse.Namespace) -> int:
    from pneumo.train.gan import sample_gan

    sample_gan(args.checkpoint, args.n, args.out, seed=args.seed, class_name=args.cls,
               best=args.best)
    return 0


def _gan_evaluate(args: argparse.Namespace) -> int:
    import json

    from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL
    from pneumo.train.gan_eval import evaluate_gan

    report = evaluate_gan(args.real, args.synthetic, args.model or DEFAULT_MODEL, args.out,
                          class_name=args.cls)
    print(json.dumps(report, indent=2))
    return 0


def add_subcommands(sub) -> None:
    """Register `pneumo gan ...`."""
    gan = sub.add_parser("gan", help="synthesise X-rays with a GAN (train, sample, evaluate)")
    gsub = gan.add_subparsers(dest="gan_command", metavar="ACTION", required=True)

    t = gsub.add_parser("train", help="train a GAN on the training split of one or both classes")
    t.add_argument("--data", required=True,
                   help="chest_xray folder (Kaggle layout); the GAN learns only the training "
                        "split's images (patient-grouped split seeded by --seed)")
    t.add_argument("--out", required=True,
                   help="run folder (gan_config.json, checkpoints, sample grids, losses.csv)")
    t.add_argument("--kind", choices=["dcgan", "sngan"], default="dcgan",
                   help="dcgan: the seed paper's; sngan: conditional, spectral norm, hinge, "
                        "DiffAugment (default: %(default)s)")
    t.add_argument("--class", dest="cls", default=None, choices=CLASS_CHOICES,
                   help="the one class to synthesise (default: NORMAL for dcgan); or --classes")
    t.add_argument("--classes", nargs="+", choices=CLASS_CHOICES + ["both"],
                   help="the class(es) to synthesise: NORMAL, PNEUMONIA or both (both: sngan "
                        "only; its default)")
    t.add_argument("--size", "--img-size", dest="img_size", type=int, default=64,
                   choices=GAN_SIZES, metavar="PX",
                   help="side of the generated images; use the classifier's input size (e.g. "
                        "128) so it need not upsample them; one of "
                        f"{', '.join(map(str, GAN_SIZES))} (default: %(default)s)")
    t.add_argument("--steps", type=int, default=3000,
                   help="training steps (one batch each) in all, counting a resumed run's "
                        "earlier ones (default: %(default)s)")
    t.add_argument("--batch-size", type=int, default=64,
                   help="real images per step (default: %(default)s)")
    t.add_argument("--seed", type=int, default=42,
                   help="seed of the weights, noise, batch order and the training split "
                        "(`ablation --split-seed` must match it) (default: %(default)s)")
    t.add_argument("--sample-every", type=int, default=250, metavar="N",
                   help="write a sample grid (and, by default, a checkpoint) every N steps "
                        "(default: %(default)s)")
    t.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="write a checkpoint every N steps (default: --sample-every)")
    t.add_argument("--log-every", type=int, default=50, metavar="N",
                   help="log step, losses and time left every N steps (and to losses.csv) "
                        "(default: %(default)s)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    t.add_argument("--backend", choices=BACKENDS, default="tensorflow",
                   help="Keras backend: jax runs on a GPU machine without TensorFlow (same GAN, "
                        "same checkpoints) (default: %(default)s)")
    t.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="every N steps, score --eval-n synthetic images (domain FID, precision/"
                        "recall, memorisation) into quality.csv/quality.png; 0: off (default: "
                        "%(default)s)")
    t.add_argument("--eval-n", type=int, default=500, metavar="N",
                   help="synthetic images per point of the quality curve (default: %(default)s)")
    t.add_argument("--eval-model", default=None, metavar="ONNX",
                   help="feature model of the quality curve, pinned by its sha256 for the run "
                        "(default: the bundled classifier)")
    t.set_defaults(func=_gan_train)
    extras.needs_train_extra(t)

    s = gsub.add_parser("sample", help="write synthetic PNGs in the Kaggle layout")
    s.add_argument("--checkpoint", required=True, help="a `gan train` output folder")
    s.add_argument("--n", type=int, required=True, help="images per class")
    s.add_argument("--out", required=True,
                   help="output folder: OUT/CLASS/*.png and manifest.csv")
    s.add_argument("--class", "--classes", dest="cls", default=None,
                   choices=CLASS_CHOICES + ["both"],
                   help="class to write (default: the GAN's first); both: every class of a "
                        "conditional GAN. Images have the GAN's own size")
    s.add_argument("--seed", type=int, default=0,
                   help="seed of the latent noise (part of the file names) "
                        "(default: %(default)s)")
    s.add_argument("--best", action="store_true",
                   help="draw from the checkpoint the run's quality curve picked (lowest "
                        "domain FID; a run trained with --eval-every), not the newest")
    s.set_defaults(func=_gan_sample)
    extras.needs_train_extra(s)

    e = gsub.add_parser("evaluate", help="domain FID, precision/recall, memorisation check")
    e.add_argument("--real", required=True, help="Kaggle folder of the real data")
    e.add_argument("--synthetic", required=True, help="folder written by `gan sample`")
    e.add_argument("--model", help="ONNX feature model (default: the bundled model)")
    e.add_argument("--class", dest="cls", default="NORMAL", choices=CLASS_CHOICES,
                   help="the class compared, real against synthetic (default: %(default)s)")
    e.add_argument("--out", required=True,
                   help="report folder (gan_quality.json/.md, closest_pairs.png)")
    e.set_defaults(func=_gan_evaluate)
    extras.needs_train_extra(e, ("scipy",))
