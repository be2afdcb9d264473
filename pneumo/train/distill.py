"""Knowledge distillation from the shipped pair (issue 27): `pneumo train --teacher MODEL.onnx`.

The student learns from the teacher's logits (softened by a temperature, mixed with the hard
labels) on augmented training images. To keep that affordable on 2 CPU cores the teacher
runs once: for K views of every training image (view 0 the image itself, views 1..K-1 the
run's augmentation, seeded by (seed, view, batch)), the augmented pixels (uint8) and the
teacher's logit are cached on disk, one view at a time, so an interrupted cache resumes at
the view it stopped in. The student's epochs then read a seeded choice of view per image
and cost what ordinary training costs (no augmentation on the fly: the views are it).

The teacher is an ONNX file with pneumo metadata, e.g. the bundled int8 pair. Its logit is
the mean of its class activation map: for a CAM-ready network (conv features -> global
average pooling -> one unit) and for the pair (mean of its members' CAMs and logits) that is
exactly the logit, with no saturation of the probability near 1. A model without a CAM
gives the logit of its clipped probability.

Never distilled on external validation: the training folder is refused as for any run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
from keras import ops

from pneumo.train.augment import AugmentConfig
from pneumo.train.data import epoch_order
from pneumo.train.keras_data import to_float

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
EPS = 1e-7
VIEW_STREAM = 7919
"""Added to a view's number in its seed, so that views never replay an epoch's draws."""


@dataclass
class TeacherViews:
    """K views of every training image (K memory-mapped uint8 N x S x S arrays) and the
    teacher's logits (K x N)."""

    views: list[np.ndarray]
    logits: np.ndarray
    teacher: dict

    @property
    def k(self) -> int:
        """Number of views per image."""
        return int(self.logits.shape[0])


class Teacher:
    """An ONNX teacher (the app's OnnxModel, all cores): logits of uint8 images."""

    def __init__(self, path: str | Path, threads: int | None = None):
        from pneumo.app.pipeline.onnx_model import OnnxModel

        self.model = OnnxModel(path, intra_op_threads=threads or os.cpu_count() or 1)
        self.path, self.sha256 = self.model.path, self.model.sha256
        self.metadata, self.input_size = self.model.metadata, self.model.input_size
        self.intensity = self.model.intensity
        self.outputs = [o.name for o in self.model.session.get_outputs()]

    def describe(self) -> dict:
        """What the model card says about the teacher."""
        return {"path": str(self.path), "name": self.metadata.get("name"),
                "version": self.metadata.get("version"), "sha256": self.sha256,
                "input_size": self.input_size,
                "logit": "mean of its CAM" if "cam" in self.outputs else "logit of p"}

    def logits(self, images_u8: np.ndarray) -> np.ndarray:
        """The teacher's logits of uint8 images (N, S, S) at any side (resized to its own)."""
        x = to_float(images_u8)
        if x.shape[1] != self.input_size:
            x = ops.convert_to_numpy(ops.image.resize(x, (self.input_size, self.input_size),
                                                      interpolation="bilinear"))
        out = dict(zip(self.outputs,
                       self.model.session.run(None, {"image": x.astype("float32")}),
                       strict=True))
        if "cam" in out:
            return out["cam"].reshape(len(x), -1).mean(axis=1).astype("float32")
        p = np.clip(out["probability"].ravel(), EPS, 1 - EPS)
        return np.log(p / (1 - p)).astype("float32")


def _manifest(teacher: Teacher, x: np.ndarray, augment: AugmentConfig, views: int,
              seed: int) -> dict:
    return {"teacher_sha256": teacher.sha256, "n": int(len(x)), "size": int(x.shape[1]),
            "views": int(views), "seed": int(seed), "augment": asdict(augment),
            "images_sha256": hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()}


def build_cache(teacher: Teacher, x: np.ndarray, augment: AugmentConfig, folder: Path, *,
                views: int, seed: int, batch: int = 64) -> TeacherViews:
    """The K views and teacher logits of the training images, cached in `folder` (resumes)."""
    from pneumo.train.augment_keras import augment_batch

    if views < 1:
        raise ValueError("--teacher-views must be at least 1")
    if teacher.intensity != "none":
        raise ValueError(f"the teacher normalises intensity ({teacher.intensity}); "
                         "distillation caches raw pixels: use a teacher with intensity none")
    folder = Path(folder)
    manifest = _manifest(teacher, x, augment, views, seed)
    if (folder / MANIFEST).exists():
        if json.loads((folder / MANIFEST).read_text()) != manifest:
            log.info("teacher cache %s was made for another teacher, data or recipe: "
                     "made again", folder)
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    n, size = len(x), int(x.shape[1])
    for k in range(views):
        done = folder / f"logits{k}.npy"
        if done.exists():
            log.info("teacher view %d/%d: cached", k + 1, views)
            continue
        pixels = np.lib.format.open_memmap(folder / f"view{k}.npy", mode="w+", dtype=np.uint8,
                                           shape=(n, size, size))
        logits = np.empty(n, dtype=np.float32)
        for b, start in enumerate(range(0, n, batch)):
            raw = x[start:start + batch]
            if k and augment.active:
                rng = np.random.default_rng([seed, VIEW_STREAM + k, b])
                aug = ops.convert_to_numpy(augment_batch(to_float(raw), augment, rng))[..., 0]
                raw = np.clip(np.rint(aug * 255.0), 0, 255).astype(np.uint8)
            pixels[start:start + len(raw)] = raw
            logits[start:start + len(raw)] = teacher.logits(raw)
            if b % 20 == 0:
                log.info("teacher view %d/%d: %d/%d images", k + 1, views,
                         min(start + batch, n), n)
        pixels.flush()
        del pixels
        np.save(folder / f"logits{k}.tmp.npy", logits)
        os.replace(folder / f"logits{k}.tmp.npy", done)  # the view's completion mark
        log.info("teacher view %d/%d: done (mean logit %.2f)", k + 1, views, logits.mean())
    return load_cache(folder, teacher.describe())


def load_cache(folder: Path, teacher: dict) -> TeacherViews:
    """The cached views (memory-mapped) and logits of a finished cache."""
    k = json.loads((Path(folder) / MANIFEST).read_text())["views"]
    views = [np.load(folder / f"view{i}.npy", mmap_mode="r") for i in range(k)]
    logits = np.stack([np.load(folder / f"logits{i}.npy") for i in range(k)])
    return TeacherViews(views, logits, teacher)


class DistillBatches(keras.utils.PyDataset):
    """One epoch of (image, [label, teacher logit], weight) batches, a seeded view per image."""

    def __init__(self, cache: TeacherViews, y: np.ndarray, weights: dict[int, float], *,
                 batch_size: int, epoch: int, seed: int, balanced_sampling: bool = False,
                 **_ignored) -> None:
        super().__init__()
        self.cache, self.y = cache, y.astype("float32")
        self.w = np.array([weights[int(c)] for c in y], dtype="float32")
        self.order = epoch_order(y, seed=seed, epoch=epoch, balanced=balanced_sampling)
        self.view = np.random.default_rng([seed, epoch, VIEW_STREAM]).integers(
            0, cache.k, len(y))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, i: int):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        v = self.view[idx]
        raw = np.empty((len(idx), *self.cache.views[0].shape[1:]), dtype=np.uint8)
        for k in np.unique(v):  # one gather per view file
            raw[v == k] = self.cache.views[k][idx[v == k]]
        images = to_float(raw)
        targets = np.stack([self.y[idx], self.cache.logits[v, idx]], axis=1)
        return images, targets, self.w[idx]


@keras.saving.register_keras_serializable(package="pneumo")
class DistillLoss(keras.losses.Loss):
    """(1 - alpha) x BCE(label, p) + alpha x T^2 x BCE(sigmoid(t / T), sigmoid(s / T)).

    y_true is (label, teacher logit); the student's logit s comes from its probability.
    """

    def __init__(self, temperature: float = 2.0, alpha: float = 0.5, name: str = "distill",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature, self.alpha = float(temperature), float(alpha)

    def call(self, y_true, y_pred):
        """Per-image loss."""
        label, t = y_true[:, :1], y_true[:, 1:2]
        p = ops.clip(y_pred, EPS, 1.0 - EPS)
        s = ops.log(p) - ops.log(1.0 - p)
        hard = -(label * ops.log(p) + (1.0 - label) * ops.log(1.0 - p))
        temp = self.temperature
        pt = ops.sigmoid(t / temp)
        soft = -(pt * ops.log_sigmoid(s / temp) + (1.0 - pt) * ops.log_sigmoid(-s / temp))
        return ops.mean((1.0 - self.alpha) * hard + self.alpha * temp * temp * soft, axis=-1)

    def get_config(self) -> dict:
        """For saving and resuming."""
        return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="pneumo")
class HardLabelAUC(keras.metrics.AUC):
    """AUC against the hard label of a (label, teacher logit) target."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        """The label column only."""
        return super().update_state(y_true[:, :1], y_pred, sample_weight=sample_weight)
