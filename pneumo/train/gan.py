"""GANs that synthesise chest X-rays: the seed paper's DCGAN and a small-data SN-GAN.

- ``dcgan``: as in the seed paper. Generator of transposed convolutions with batch norm and
  ReLU, discriminator of strided convolutions with LeakyReLU, binary cross-entropy, one class.
- ``sngan``: class-conditional (one model for both classes; projection discriminator),
  spectral normalisation in the discriminator, hinge loss and DiffAugment (translation,
  cutout, brightness/contrast applied to real and fake alike), for the small-data regime.

Training is seeded and resumable: generator, discriminator, both optimizers, the step and the
random generator state live in one tf.train.Checkpoint, so a resumed run continues exactly.
Only images of the training split are used, never validation patients.
"""

from __future__ import annotations

import csv
import json
import logging
import time
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


def diff_augment(x, rng):
    """DiffAugment: differentiable brightness/contrast, translation and cutout (same for G and D)."""
    import tensorflow as tf

    n = tf.shape(x)[0]
    size = x.shape[1]
    x = x + (rng.uniform([n, 1, 1, 1]) - 0.5) * 0.5
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * (rng.uniform([n, 1, 1, 1]) + 0.5) + mean
    pad = size // 8
    xp = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    ox = rng.uniform([], 0, 2 * pad + 1, dtype=tf.int32)
    oy = rng.uniform([], 0, 2 * pad + 1, dtype=tf.int32)
    x = xp[:, oy:oy + size, ox:ox + size, :]
    cut = size // 2
    cy = rng.uniform([n, 1, 1, 1], 0, size, dtype=tf.int32)
    cx = rng.uniform([n, 1, 1, 1], 0, size, dtype=tf.int32)
    yy = tf.reshape(tf.range(size), [1, size, 1, 1])
    xx = tf.reshape(tf.range(size), [1, 1, size, 1])
    inside = (tf.abs(yy - cy) < cut // 2) & (tf.abs(xx - cx) < cut // 2)
    return tf.where(inside, tf.zeros_like(x), x)


def load_gan_images(cfg: GanConfig) -> tuple[np.ndarray, np.ndarray]:
    """Training-split images of the chosen classes, in [-1, 1], with class indices."""
    from pneumo.train.data import CLASS_NAMES, load_arrays, make_split

    split = make_split(cfg.data, cfg.val_fraction, cfg.seed)
    wanted = [CLASS_NAMES.index(c) for c in cfg.classes]
    samples = [s for s in split.train if s.label in wanted]
    x, y = load_arrays(samples, cfg.img_size, progress=len(samples) > 500)
    labels = np.array([wanted.index(int(v)) for v in y], dtype=np.int32)
    return (x.astype(np.float32)[..., None] / 127.5 - 1.0), labels


class GanTrainer:
    """Seeded, checkpointed GAN training on the CPU or a GPU."""

    def __init__(self, cfg: GanConfig):
        import keras
        import tensorflow as tf

        if cfg.kind not in GAN_KINDS:
            raise ValueError(f"unknown GAN {cfg.kind!r}; choose from {GAN_KINDS}")
        self.cfg = cfg
        keras.utils.set_random_seed(cfg.seed)
        tf.config.experimental.enable_op_determinism()
        self.n_classes = len(cfg.classes)
        self.G = build_generator(cfg.kind, cfg.img_size, cfg.z_dim, self.n_classes)
        self.D = build_discriminator(cfg.kind, cfg.img_size, self.n_classes)
        beta1 = 0.5 if cfg.kind == "dcgan" else 0.0
        self.opt_g = keras.optimizers.Adam(cfg.lr_g, beta_1=beta1, beta_2=0.999)
        self.opt_d = keras.optimizers.Adam(cfg.lr_d, beta_1=beta1, beta_2=0.999)
        self.opt_g.build(self.G.trainable_variables)
        self.opt_d.build(self.D.trainable_variables)
        self.rng = tf.random.Generator.from_seed(cfg.seed)
        self.step = tf.Variable(0, dtype=tf.int64)
        self.ckpt = tf.train.Checkpoint(
            G=self.G, D=self.D, opt_g=self.opt_g, opt_d=self.opt_d, rng=self.rng, step=self.step
        )
        self.manager = tf.train.CheckpointManager(self.ckpt, str(Path(cfg.out) / "ckpt"),
                                                  max_to_keep=2)
        fixed = np.random.default_rng(cfg.seed).standard_normal((16, cfg.z_dim))
        self.fixed_z = fixed.astype(np.float32)
        self.fixed_c = (np.arange(16) % self.n_classes).astype(np.int32)
        self._train_step = tf.function(self._step)

    def _inputs(self, x, c):
        return [x, c] if self.cfg.kind == "sngan" else [x]

    def _step(self, real, labels):
        import tensorflow as tf

        n = tf.shape(real)[0]
        z = self.rng.normal([n, self.cfg.z_dim])
        aug = self.cfg.kind == "sngan"
        with tf.GradientTape() as tg, tf.GradientTape() as td:
            fake = self.G(self._inputs(z, labels), training=True)
            r_in = diff_augment(real, self.rng) if aug else real
            f_in = diff_augment(fake, self.rng) if aug else fake
            d_real = self.D(self._inputs(r_in, labels), training=True)
            d_fake = self.D(self._inputs(f_in, labels), training=True)
            if self.cfg.kind == "sngan":  # hinge loss
                loss_d = tf.reduce_mean(tf.nn.relu(1 - d_real)) + tf.reduce_mean(
                    tf.nn.relu(1 + d_fake))
                loss_g = -tf.reduce_mean(d_fake)
            else:
                bce = tf.nn.sigmoid_cross_entropy_with_logits
                loss_d = tf.reduce_mean(bce(tf.ones_like(d_real), d_real)) + tf.reduce_mean(
                    bce(tf.zeros_like(d_fake), d_fake))
                loss_g = tf.reduce_mean(bce(tf.ones_like(d_fake), d_fake))
        self.opt_d.apply_gradients(zip(td.gradient(loss_d, self.D.trainable_variables),
                                       self.D.trainable_variables, strict=True))
        self.opt_g.apply_gradients(zip(tg.gradient(loss_g, self.G.trainable_variables),
                                       self.G.trainable_variables, strict=True))
        self.step.assign_add(1)
        return loss_d, loss_g

    def restore(self) -> bool:
        """Restore the latest checkpoint if there is one."""
        latest = self.manager.latest_checkpoint
        if latest:
            self.ckpt.restore(latest).expect_partial()
        return bool(latest)

    def generate(self, z: np.ndarray, labels: np.ndarray, batch: int = 64) -> np.ndarray:
        """Images in [0, 1], shape (N, S, S, 1)."""
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

    def save_checkpoint(self) -> Path:
        """Save the full training state (models, optimizers, random state, step)."""
        return Path(self.manager.save(checkpoint_number=int(self.step.numpy())))

    def train(self, x: np.ndarray, labels: np.ndarray) -> dict:
        """Run until cfg.steps, logging losses, writing sample grids and checkpoints.

        A checkpoint is written every cfg.checkpoint_every steps, at the end, and when the
        run is interrupted (Ctrl-C), so `--resume` loses at most the step in flight.
        """
        import tensorflow as tf

        cfg = self.cfg
        out = Path(cfg.out)
        (out / "samples").mkdir(parents=True, exist_ok=True)
        log_path = out / "losses.csv"
        start = int(self.step.numpy())
        _truncate_losses(log_path, start)
        t0 = time.time()
        step = start
        try:
            while step < cfg.steps:
                idx = self._batch_indices(step, len(x))
                loss_d, loss_g = self._train_step(tf.constant(x[idx]), tf.constant(labels[idx]))
                step += 1
                if step % cfg.log_every == 0 or step == cfg.steps:
                    secs = time.time() - t0
                    with log_path.open("a") as f:
                        f.write(f"{step},{float(loss_d):.5f},{float(loss_g):.5f},{secs:.1f}\n")
                    per_step = secs / (step - start)
                    log.info("step %d/%d loss_d %.4f loss_g %.4f (%.2f s/step, %.0f s left)",
                             step, cfg.steps, float(loss_d), float(loss_g), per_step,
                             per_step * (cfg.steps - step))
                if step % cfg.sample_every == 0 or step == cfg.steps:
                    self.save_grid(out / "samples" / f"step{step:06d}.png")
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    self.save_checkpoint()
                    log.info("checkpoint at step %d in %s", step, out / "ckpt")
        except KeyboardInterrupt:
            if int(self.step.numpy()) > start:
                self.save_checkpoint()
                log.warning("interrupted: checkpoint at step %d; continue with --resume",
                            int(self.step.numpy()))
            raise
        return {"steps": int(self.step.numpy()), "seconds": round(time.time() - t0, 1)}


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
    elif (out / "ckpt" / "checkpoint").exists():
        log.warning("%s already holds a GAN checkpoint: starting over (pass --resume to "
                    "continue it)", out)
    cfg_path.write_text(json.dumps(asdict(cfg), indent=2))
    trainer = GanTrainer(cfg)
    if resume and trainer.restore():
        log.info("resumed at step %d of %d", int(trainer.step.numpy()), cfg.steps)
    x, labels = load_gan_images(cfg)
    log.info("%s: %d training images of %s at %d px; %d steps, checkpoint every %d",
             cfg.kind, len(x), list(cfg.classes), cfg.img_size, cfg.steps, cfg.checkpoint_every)
    return trainer.train(x, labels)


def load_trainer(checkpoint_dir: str | Path) -> GanTrainer:
    """A GanTrainer restored from a run folder (or its ckpt/ subfolder)."""
    run = Path(checkpoint_dir)
    if run.name == "ckpt":
        run = run.parent
    saved = json.loads((run / "gan_config.json").read_text())
    saved["classes"] = tuple(saved["classes"])
    saved["out"] = str(run)
    known = set(GanConfig.__dataclass_fields__)
    trainer = GanTrainer(GanConfig(**{k: v for k, v in saved.items() if k in known}))
    if not trainer.restore():
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
               class_name: str | None = None) -> Path:
    """Write n synthetic PNGs per class in the Kaggle layout (OUT/CLASS/...) with manifest.csv.

    Images have the GAN's own size (gan_config.json img_size). `class_name` is one class,
    'both' (a conditional GAN's every class) or None (the GAN's first class).
    """
    from PIL import Image

    trainer = load_trainer(checkpoint)
    classes = list(trainer.cfg.classes)
    chosen = sample_classes(classes, class_name)
    out = Path(out)
    rng = np.random.default_rng(seed)
    step = int(trainer.step.numpy())
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
