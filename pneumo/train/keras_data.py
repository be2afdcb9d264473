"""Input for Keras backends other than TensorFlow (JAX on a GPU machine), from cached arrays.

The counterpart of `train.tf_data`: the same epoch order (`train.data.epoch_order`), class
weights, burned-in-text copies, augmentation (`train.augment_keras`, on the backend's device)
and mixup, served as a `keras.utils.PyDataset` that `model.fit` takes on any backend. Each
batch's draws depend only on (seed, epoch, batch index), so a resumed run sees the batches
it would have seen.
"""

from __future__ import annotations

import numpy as np
from keras import ops
from keras.utils import PyDataset

from pneumo.train.augment import AugmentConfig
from pneumo.train.augment_keras import augment_batch
from pneumo.train.data import epoch_order


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 images (N, S, S) as float32 (N, S, S, 1) in [0, 1]: the model's input."""
    return x.astype("float32")[..., None] / 255.0


def _mixup(images, labels: np.ndarray, weights: np.ndarray, alpha: float,
           rng: np.random.Generator):
    """Mix each image with another of the batch: lam ~ Beta(alpha, alpha), labels mixed too."""
    n = len(labels)
    lam = rng.beta(alpha, alpha, n).astype("float32")
    lam = np.maximum(lam, 1.0 - lam)  # the first image stays the dominant one
    perm = rng.permutation(n)
    images = lam[:, None, None, None] * images + (1.0 - lam[:, None, None, None]) * ops.take(
        images, perm, axis=0)
    labels = lam[:, None] * labels + (1.0 - lam[:, None]) * labels[perm]
    weights = lam * weights + (1.0 - lam) * weights[perm]
    return images, labels, weights


class EpochBatches(PyDataset):
    """One epoch of shuffled, augmented (image, label, sample weight) batches."""

    def __init__(self, x: np.ndarray, y: np.ndarray, weights: dict[int, float], *,
                 batch_size: int, epoch: int, seed: int, augment: AugmentConfig,
                 mixup: float = 0.0, balanced_sampling: bool = False,
                 x_alt: np.ndarray | None = None, alt_prob: float = 0.0) -> None:
        super().__init__()
        self.x, self.y, self.x_alt = x, y.astype("float32"), x_alt
        self.w = np.array([weights[int(c)] for c in y], dtype="float32")
        self.order = epoch_order(y, seed=seed, epoch=epoch, balanced=balanced_sampling)
        self.batch_size, self.epoch, self.seed = batch_size, epoch, seed
        self.augment, self.mixup, self.alt_prob = augment, mixup, alt_prob

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, i: int):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        raw = self.x[idx]
        if self.x_alt is not None and self.alt_prob > 0:
            pick = rng.uniform(size=len(idx)) < self.alt_prob
            raw = np.where(pick[:, None, None], self.x_alt[idx], raw)
        images = to_float(raw)
        if self.augment.active:
            images = augment_batch(images, self.augment, rng)
        labels, w = self.y[idx][:, None], self.w[idx]
        if self.mixup > 0:
            images, labels, w = _mixup(images, labels, w, self.mixup, rng)
        return images, labels, w
