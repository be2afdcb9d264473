"""tf.data input pipelines built from the cached uint8 arrays of `train.data`."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pneumo.train.augment import AugmentConfig
from pneumo.train.augment_tf import augment_batch
from pneumo.train.data import epoch_order


def _to_float(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(x, tf.float32)[..., None] / 255.0


def _mixup(images, labels, weights, alpha: float, seed):
    """Mix each image with another of the batch: lam ~ Beta(alpha, alpha), labels mixed too."""
    n = tf.shape(images)[0]
    s = tf.random.experimental.stateless_split(seed, 3)
    g1 = tf.random.stateless_gamma([n], seed=s[0], alpha=alpha)
    g2 = tf.random.stateless_gamma([n], seed=s[1], alpha=alpha)
    lam = g1 / (g1 + g2)
    lam = tf.maximum(lam, 1.0 - lam)  # the first image stays the dominant one
    perm = tf.argsort(tf.random.stateless_uniform([n], seed=s[2]))
    lam_img = lam[:, None, None, None]
    images = lam_img * images + (1.0 - lam_img) * tf.gather(images, perm)
    labels = lam[:, None] * labels + (1.0 - lam[:, None]) * tf.gather(labels, perm)
    weights = lam * weights + (1.0 - lam) * tf.gather(weights, perm)
    return images, labels, weights


def train_dataset(x: np.ndarray, y: np.ndarray, weights: dict[int, float], *, batch_size: int,
                  epoch: int, seed: int, augment: AugmentConfig, mixup: float = 0.0,
                  balanced_sampling: bool = False, x_alt: np.ndarray | None = None,
                  alt_prob: float = 0.0) -> tf.data.Dataset:
    """One epoch of shuffled, augmented (image, label, sample weight) batches.

    `x_alt` is a second version of every image (e.g. with burned-in text, `train.overlays`)
    taken instead of the original with probability `alt_prob`, drawn anew each epoch.
    The order and the augmentation draws depend only on (seed, epoch), so a resumed run
    sees exactly the batches it would have seen.
    """
    order = epoch_order(y, seed=seed, epoch=epoch, balanced=balanced_sampling)
    x_t = tf.constant(x)
    y_t = tf.constant(y.astype(np.float32))
    w_t = tf.constant(np.array([weights[int(c)] for c in y], dtype=np.float32))
    alt_t = tf.constant(x_alt) if x_alt is not None and alt_prob > 0 else None

    def make(i, idx):
        batch_seed = tf.stack([tf.cast(seed, tf.int64), epoch * 100_003 + i])
        raw = tf.gather(x_t, idx)
        if alt_t is not None:
            pick = tf.random.stateless_uniform(tf.shape(idx), seed=batch_seed + 11) < alt_prob
            raw = tf.where(pick[:, None, None], tf.gather(alt_t, idx), raw)
        images = _to_float(raw)
        if augment.active:
            images = augment_batch(images, augment, batch_seed)
        labels, w = tf.gather(y_t, idx)[:, None], tf.gather(w_t, idx)
        if mixup > 0:
            images, labels, w = _mixup(images, labels, w, mixup, batch_seed + 7)
        return images, labels, w

    ds = tf.data.Dataset.from_tensor_slices(order.astype(np.int64)).batch(batch_size).enumerate()
    ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(x: np.ndarray, batch_size: int = 64) -> tf.data.Dataset:
    """Unaugmented float batches for prediction, cached after the first pass."""
    ds = tf.data.Dataset.from_tensor_slices(x).batch(batch_size).map(_to_float)
    return ds.cache().prefetch(tf.data.AUTOTUNE)
