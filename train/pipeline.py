"""tf.data input pipelines built from the cached uint8 arrays of `train.data`."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from train.augment import AugmentConfig, augment_batch


def _to_float(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(x, tf.float32)[..., None] / 255.0


def train_dataset(x: np.ndarray, y: np.ndarray, weights: dict[int, float], *, batch_size: int,
                  epoch: int, seed: int, augment: AugmentConfig) -> tf.data.Dataset:
    """One epoch of shuffled, augmented (image, label, sample weight) batches.

    The order and the augmentation draws depend only on (seed, epoch), so a resumed run
    sees exactly the batches it would have seen.
    """
    perm = np.random.default_rng([seed, epoch]).permutation(len(y))
    x_t = tf.constant(x)
    y_t = tf.constant(y.astype(np.float32))
    w_t = tf.constant(np.array([weights[int(c)] for c in y], dtype=np.float32))

    def make(i, idx):
        images = _to_float(tf.gather(x_t, idx))
        if augment.active:
            images = augment_batch(images, augment, tf.stack([tf.cast(seed, tf.int64),
                                                              epoch * 100_003 + i]))
        return images, tf.gather(y_t, idx)[:, None], tf.gather(w_t, idx)

    ds = tf.data.Dataset.from_tensor_slices(perm.astype(np.int64)).batch(batch_size).enumerate()
    ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(x: np.ndarray, batch_size: int = 64) -> tf.data.Dataset:
    """Unaugmented float batches for prediction, cached after the first pass."""
    ds = tf.data.Dataset.from_tensor_slices(x).batch(batch_size).map(_to_float)
    return ds.cache().prefetch(tf.data.AUTOTUNE)
