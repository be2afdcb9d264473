"""GANs that synthesise chest X-rays: the seed paper's DCGAN and a small-data SN-GAN.

- ``dcgan``: as in the seed paper. Generator of transposed convolutions with batch norm and
  ReLU, discriminator of strided convolutions with LeakyReLU, binary cross-entropy, one class.
- ``sngan``: class-conditional (one model for both classes; projection discriminator),
  spectral normalisation in the discriminator, hinge loss and DiffAugment (translation,
  cutout, brightness/contrast applied to real and fake alike), for the small-data regime.

Training runs on Keras 3 with the TensorFlow backend (the CPU here) or the JAX backend (a lent
GPU without TensorFlow): `pneumo.train.gan_step` holds the one step for each. It is seeded and
resumable: every N steps a Keras-native checkpoint (``ckpt/step-NNNNNN/``: both models'
``.weights.h5``, both optimizers' variables, the step) is written, and a step's random numbers
are a function of (seed, step), so a resumed run continues exactly. Only images of the
training split are used, never validation patients.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pneumo.train.config import GAN_SIZES
from pneumo.train.data import refuse_external_val

GAN_KINDS = ("dcgan", "sngan")
"""Image sides the GANs build for (base x 2**k with base 3..7; 64 is the default)."""

log = logging.getLogger(__name__)


@dataclass
class GanConfig:
    """Everything that defines a GAN run."""

    data: str
    out: str
    kind: str = "dcgan"
    classes: tuple[str, ...] = ("NORMAL",)
    img_size: int = 64
    steps: int = 3000
    batch_size: int = 64
    z_dim: int = 100
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    seed: int = 42
    sample_every: int = 250
    checkpoint_every: int = 250
    val_fraction: float = 0.2
    log_every: int = 50
    eval_every: int = 0
    """Steps between points of the quality curve (0: no curve)."""
    eval_n: int = 500
    """Synthetic images scored at each point of the curve."""
    eval_model: str | None = None
    """ONNX feature model of the curve (None: the bundled classifier), pinned by sha256."""


def size_stages(img_size: int) -> tuple[int, int]:
    """(base, k) with img_size == base * 2**k, 3 <= base <= 7, k >= 2: the up/down stages.

    Powers of two start from 4 x 4 (64 -> 4 * 2**4, as the seed paper's DCGAN); 96 starts
    from 6 x 6, 224 (the classifier's input) from 7 x 7.
    """
    base, k = int(img_size), 0
    while base > 7 and base % 2 == 0:
        base, k = base // 2, k + 1
    if not 3 <= base <= 7 or k < 2:
        raise ValueError(f"GAN image size {img_size} must be base * 2**k with base 3..7 and "
                         f"k >= 2 (e.g. {', '.join(map(str, GAN_SIZES))})")
    return base, k


def _base_width(size: int) -> int:
    return 256 if size <= 32 else 512


def build_generator(kind: str, img_size: int, z_dim: int, n_classes: int):
    """Generator: z (and class) -> (S, S, 1) image in [-1, 1]."""
    import keras
    from keras import layers

    base, n_up = size_stages(img_size)
    z = keras.Input((z_dim,), name="z")
    inputs = [z]
    h = z
    if kind == "sngan":
        c = keras.Input((), dtype="int32", name="label")
        inputs.append(c)
        h = layers.Concatenate()([z, layers.Flatten()(layers.Embedding(n_classes, z_dim)(c))])
    width = _base_width(img_size)
    h = layers.Dense(base * base * width, use_bias=False)(h)
    h = layers.Reshape((base, base, width))(h)
    h = layers.ReLU()(layers.BatchNormalization()(h))
    for _ in range(n_up - 1):
        width = max(32, width // 2)
        h = layers.Conv2DTranspose(width, 4, strides=2, padding="same", use_bias=False)(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
    out = layers.Conv2DTranspose(1, 4, strides=2, padding="same", activation="tanh")(h)
    return keras.Model(inputs, out, name=f"{kind}_generator")


def build_discriminator(kind: str, img_size: int, n_classes: int):
    """Discriminator: image (and class) -> one logit."""
    import keras
    from keras import layers

    sn = (lambda layer: layers.SpectralNormalization(layer)) if kind == "sngan" else (
        lambda layer: layer)
    x = keras.Input((img_size, img_size, 1), name="image")
    inputs = [x]
    h = x
    width = 64
    for i in range(size_stages(img_size)[1]):
        h = sn(layers.Conv2D(width, 4, strides=2, padding="same"))(h)
        if kind == "dcgan" and i > 0:
            h = layers.BatchNormalization()(h)
        h = layers.LeakyReLU(0.2)(h)
        width = min(512, width * 2)
    feat = layers.GlobalAveragePooling2D()(h) if kind == "sngan" else layers.Flatten()(h)
    logit = sn(layers.Dense(1))(feat)
    if kind == "sngan":  # projection discriminator: + <embed(label), features>
        c = keras.Input((), dtype="int32", name="label")
        inputs.append(c)
        emb = layers.Flatten()(layers.Embedding(n_classes, feat.shape[-1])(c))
        logit = layers.Add()([logit, layers.Dot(axes=1)([emb, feat])])
    return keras.Model(inputs, logit, name=f"{kind}_discriminator")


def load_gan_images(cfg: GanConfig) -> tuple[np.ndarray, np.ndarray]:
    """Training-split images of the chosen classes, in [-1, 1], with class indices."""
    from pneumo.train.data import CLASS_NAMES, load_arrays, make_split

    split = make_split(cfg.data, cfg.val_fraction, cfg.seed)
    wanted = [CLASS_NAMES.index(c) for c in cfg.classes]
    samples = [s for s in split.train if s.label in wanted]
    x, y = load_arrays(samples, cfg.img_size, progress=len(samples) > 500)
    labels = np.array([wanted.index(int(v)) for v in y], dtype=np.int32)
    return (x.astype(np.float32)[..., None] / 127.5 - 1.0), labels


CHECKPOINTS_KEPT = 2
"""Checkpoint folders kept in ckpt/ (the newest), besides ckpt/best."""
BEST = "best"
"""ckpt/ subfolder of the checkpoint the quality curve picked (lowest domain FID so far)."""


class GanTrainer:
    """Seeded, checkpointed GAN training on the CPU or a GPU (TensorFlow or JAX backend)."""

    def __init__(self, cfg: GanConfig):
        import keras

        from pneumo.train.gan_step import make_step

        if cfg.kind not in GAN_KINDS:
            raise ValueError(f"unknown GAN {cfg.kind!r}; choose from {GAN_KINDS}")
        self.cfg = cfg
        self.backend = keras.backend.backend()
        keras.utils.set_random_seed(cfg.seed)
        if self.backend == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        self.n_classes = len(cfg.classes)
        self.G = build_generator(cfg.kind, cfg.img_size, cfg.z_dim, self.n_classes)
        self.D = build_discriminator(cfg.kind, cfg.img_size, self.n_classes)
        beta1 = 0.5 if cfg.kind == "dcgan" else 0.0
        self.opt_g = keras.optimizers.Adam(cfg.lr_g, beta_1=beta1, beta_2=0.999)
        self.opt_d = keras.optimizers.Adam(cfg.lr_d, beta_1=beta1, beta_2=0.999)
        self.opt_g.build(self.G.trainable_variables)
        self.opt_d.build(self.D.trainable_variables)
        self.step = 0
        self.ckpt_dir = Path(cfg.out) / "ckpt"
        fixed = np.random.default_rng(cfg.seed).standard_normal((16, cfg.z_dim))
        self.fixed_z = fixed.astype(np.float32)
        self.fixed_c = (np.arange(16) % self.n_classes).astype(np.int32)
        self._train_step = make_step(self.G, self.D, self.opt_g, self.opt_d, cfg.kind, cfg.z_dim)

    def _inputs(self, x, c):
        return [x, c] if self.cfg.kind == "sngan" else [x]

    def restore(self, *, best: bool = False) -> bool:
        """Restore the latest checkpoint (or with ``best`` the one the quality curve picked)
        if there is one (False: none in this format)."""
        latest = self.ckpt_dir / "latest"
        if best:
            folder = self.ckpt_dir / BEST
            if not (folder / "state.json").is_file():
                raise FileNotFoundError(f"no checkpoint picked by a quality curve under "
                                        f"{self.ckpt_dir} (train with --eval-every)")
        elif not latest.is_file():
            if (self.ckpt_dir / "checkpoint").exists():
                log.warning("%s holds a checkpoint of the earlier (tf.train) format, which "
                            "this version does not resume: starting over", self.ckpt_dir)
            return False
        else:
            folder = self.ckpt_dir / latest.read_text().strip()
        self.G.load_weights(folder / "generator.weights.h5")
        self.D.load_weights(folder / "discriminator.weights.h5")
        with np.load(folder / "optimizers.npz") as saved:
            for prefix, opt in (("g", self.opt_g), ("d", self.opt_d)):
                for i, v in enumerate(opt.variables):
                    v.assign(saved[f"{prefix}{i}"])
        self.step = int(json.loads((folder / "state.json").read_text())["step"])
        self._train_step.reload()
        return True

    def generate(self, z: np.ndarray, labels: np.ndarray, batch: int = 64) -> np.ndarray:
        """Images in [0, 1], shape (N, S, S, 1)."""
        self._train_step.sync()
        outs = []
        for i in range(0, len(z), batch):
            args = self._inputs(z[i:i + batch], labels[i:i + batch])
            outs.append(np.asarray(self.G(args, training=False)))
        return (np.concatenate(outs) + 1.0) / 2.0

    def save_grid(self, path: Path) -> None:
        """A 4 x 4 PNG grid of the fixed-noise samples."""
        from PIL import Image

        imgs = np.clip(self.generate(self.fixed_z, self.fixed_c)[..., 0], 0, 1)
        s = self.cfg.img_size
        grid = imgs.reshape(4, 4, s, s).transpose(0, 2, 1, 3).reshape(4 * s, 4 * s)
        Image.fromarray(np.round(grid * 255).astype(np.uint8)).save(path)

    def _batch_indices(self, step: int, n: int) -> np.ndarray:
        """The images of one step: a function of (seed, step) only, so a resume is exact."""
        bs = self.cfg.batch_size
        epoch, offset = divmod(step * bs, n)
        perm = np.random.default_rng([self.cfg.seed, epoch]).permutation(n)
        idx = perm[offset:offset + bs]
        while len(idx) < bs:  # wrap into the next epoch's order
            epoch += 1
            nxt = np.random.default_rng([self.cfg.seed, epoch]).permutation(n)
            idx = np.concatenate([idx, nxt[: bs - len(idx)]])
        return idx

    def save_checkpoint(self, *, best: bool = False) -> Path:
        """Save the full training state (Keras-native weights, optimizers, step); atomic.

        With ``best``: into ckpt/best (the quality curve's pick so far), kept apart from the
        newest checkpoints and never pruned."""
        self._train_step.sync()
        name = BEST if best else f"step-{self.step:06d}"
        folder, tmp = self.ckpt_dir / name, self.ckpt_dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.G.save_weights(tmp / "generator.weights.h5")
        self.D.save_weights(tmp / "discriminator.weights.h5")
        np.savez(tmp / "optimizers.npz",
                 **{f"g{i}": np.asarray(v) for i, v in enumerate(self.opt_g.variables)},
                 **{f"d{i}": np.asarray(v) for i, v in enumerate(self.opt_d.variables)})
        (tmp / "state.json").write_text(json.dumps({"step": self.step,
                                                    "backend": self.backend}))
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        if best:
            return folder
        (self.ckpt_dir / "latest.tmp").write_text(name)
        os.replace(self.ckpt_dir / "latest.tmp", self.ckpt_dir / "latest")
        for old in sorted(self.ckpt_dir.glob("step-*"))[:-CHECKPOINTS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def train(self, x: np.ndarray, labels: np.ndarray,
              on_eval: Callable[[GanTrainer], None] | None = None) -> dict:
        """Run until cfg.steps, logging losses, writing sample grids and checkpoints.

        A checkpoint is written every cfg.checkpoint_every steps, at the end, and when the
        run is interrupted (Ctrl-C), so `--resume` loses at most the step in flight.
        `on_eval` (the quality curve) is called every cfg.eval_every steps.
        """
        from pneumo.train.gan_step import step_seed

        cfg = self.cfg
        out = Path(cfg.out)
        (out / "samples").mkdir(parents=True, exist_ok=True)
        log_path = out / "losses.csv"
        start = self.step
        _truncate_losses(log_path, start)
        t0 = time.time()
        try:
            while self.step < cfg.steps:
                idx = self._batch_indices(self.step, len(x))
                loss_d, loss_g = self._train_step(x[idx], labels[idx],
                                                  step_seed(cfg.seed, self.step))
                self.step += 1
                step = self.step
                if step % cfg.log_every == 0 or step == cfg.steps:
                    secs = time.time() - t0
                    with log_path.open("a") as f:
                        f.write(f"{step},{loss_d:.5f},{loss_g:.5f},{secs:.1f}\n")
                    per_step = secs / (step - start)
                    log.info("step %d/%d loss_d %.4f loss_g %.4f (%.3f s/step, %.0f s left)",
                             step, cfg.steps, loss_d, loss_g, per_step,
                             per_step * (cfg.steps - step))
                if step % cfg.sample_every == 0 or step == cfg.steps:
                    self.save_grid(out / "samples" / f"step{step:06d}.png")
                if on_eval is not None and cfg.eval_every and (
                        step % cfg.eval_every == 0 or step == cfg.steps):
                    on_eval(self)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self.save_checkpoint()
                    log.info("checkpoint at step %d in %s", step, self.ckpt_dir)
        except KeyboardInterrupt:
            if self.step > start:
                self.save_checkpoint()
                log.warning("interrupted: checkpoint at step %d; continue with --resume",
                            self.step)
            raise
        return {"steps": self.step, "seconds": round(time.time() - t0, 1),
                "backend": self.backend}


def _truncate_losses(path: Path, start: int) -> None:
    """losses.csv up to `start` (rows logged after the last checkpoint of a killed run go)."""
    header = "step,loss_d,loss_g,seconds\n"
    if start == 0 or not path.exists():
        path.write_text(header)
        return
    lines = path.read_text().splitlines(keepends=True)[1:]
    kept = [ln for ln in lines if ln.strip() and int(ln.split(",", 1)[0]) <= start]
    path.write_text(header + "".join(kept))


_STATE_FIELDS = ("kind", "classes", "img_size", "z_dim", "batch_size", "lr_g", "lr_d", "seed",
                 "val_fraction")
"""GanConfig fields a resumed run keeps from its saved config (they define its state)."""


def train_gan(cfg: GanConfig, *, resume: bool = False) -> dict:
    """`pneumo gan train`: train (or resume) a GAN run in cfg.out."""
    refuse_external_val(cfg.data, "GAN training data")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "gan_config.json"
    if resume and cfg_path.exists():
        saved = json.loads(cfg_path.read_text())
        saved["classes"] = tuple(saved["classes"])
        changed = [k for k in _STATE_FIELDS if k in saved and saved[k] != getattr(cfg, k)]
        if changed:
            log.warning("resuming with the saved %s (the run's own), not the ones given",
                        ", ".join(f"{k}={saved[k]}" for k in changed))
        cfg = GanConfig(**{**asdict(cfg), **{k: saved[k] for k in _STATE_FIELDS if k in saved}})
    elif (out / "ckpt").exists():
        log.warning("%s already holds a GAN checkpoint: starting over (pass --resume to "
                    "continue it)", out)
        shutil.rmtree(out / "ckpt")
        for stale in ("quality.csv", "quality_model.json"):
            (out / stale).unlink(missing_ok=True)
    cfg_path.write_text(json.dumps(asdict(cfg), indent=2))
    trainer = GanTrainer(cfg)
    if resume and trainer.restore():
        log.info("resumed at step %d of %d", trainer.step, cfg.steps)
    x, labels = load_gan_images(cfg)
    log.info("%s on %s: %d training images of %s at %d px; %d steps, checkpoint every %d",
             cfg.kind, trainer.backend, len(x), list(cfg.classes), cfg.img_size, cfg.steps,
             cfg.checkpoint_every)
    curve = None
    if cfg.eval_every:
        from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL
        from pneumo.train.gan_quality import QualityCurve

        real_u8 = np.round((x[labels == 0, ..., 0] + 1.0) * 127.5).astype(np.uint8)
        curve = QualityCurve(out, real_u8, cfg.eval_model or DEFAULT_MODEL, n=cfg.eval_n,
                             seed=cfg.seed)
    return trainer.train(x, labels, on_eval=curve)


def load_trainer(checkpoint_dir: str | Path, *, best: bool = False) -> GanTrainer:
    """A GanTrainer restored from a run folder (or its ckpt/ subfolder): its newest
    checkpoint, or with ``best`` the one its quality curve picked."""
    run = Path(checkpoint_dir)
    if run.name == "ckpt":
        run = run.parent
    saved = json.loads((run / "gan_config.json").read_text())
    saved["classes"] = tuple(saved["classes"])
    saved["out"] = str(run)
    known = set(GanConfig.__dataclass_fields__)
    trainer = GanTrainer(GanConfig(**{k: v for k, v in saved.items() if k in known}))
    if not trainer.restore(best=best):
        raise FileNotFoundError(f"no checkpoint under {run / 'ckpt'}")
    return trainer


def sample_classes(trained: list[str], wanted: str | None) -> list[str]:
    """Which classes `gan sample` writes: None = the GAN's first, 'both' = every class."""
    if wanted is None:
        return trained[:1]
    chosen = list(trained) if wanted == "both" else [wanted]
    missing = [c for c in chosen if c not in trained]
    if missing or (wanted == "both" and len(trained) < 2):
        raise ValueError(f"this GAN was trained on {trained}, not {wanted}")
    return chosen


def sample_gan(checkpoint: str | Path, n: int, out: str | Path, *, seed: int = 0,
               class_name: str | None = None, best: bool = False) -> Path:
    """Write n synthetic PNGs per class in the Kaggle layout (OUT/CLASS/...) with manifest.csv.

    Images have the GAN's own size (gan_config.json img_size). `class_name` is one class,
    'both' (a conditional GAN's every class) or None (the GAN's first class).
    """
    from PIL import Image

    trainer = load_trainer(checkpoint, best=best)
    classes = list(trainer.cfg.classes)
    chosen = sample_classes(classes, class_name)
    out = Path(out)
    rng = np.random.default_rng(seed)
    step = trainer.step
    rows = []
    for cls in chosen:
        z = rng.standard_normal((n, trainer.cfg.z_dim)).astype(np.float32)
        labels = np.full(n, classes.index(cls), dtype=np.int32)
        imgs = trainer.generate(z, labels)
        (out / cls).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(imgs):
            name = f"synthetic-{trainer.cfg.kind}-s{seed}-{i:05d}.png"
            Image.fromarray(np.round(np.clip(img[..., 0], 0, 1) * 255).astype(np.uint8)).save(
                out / cls / name)
            rows.append({"file": f"{cls}/{name}", "class": cls, "gan": trainer.cfg.kind,
                         "checkpoint_step": step, "sample_seed": seed, "index": i,
                         "size": trainer.cfg.img_size})
    with (out / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    log.info("wrote %d images of %s at %d px to %s (checkpoint step %d)", len(rows), chosen,
             trainer.cfg.img_size, out, step)
    return out
