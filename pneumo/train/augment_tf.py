"""Augmentation in the tf.data input pipeline (never inside the exported model).

Applies a `train.augment.AugmentConfig` with TensorFlow ops. Every transform is stateless:
the random draw of a batch depends only on (seed, epoch, batch index), so runs are
reproducible and a resumed run draws the same augmentations.
"""

from __future__ import annotations

import math

import tensorflow as tf

from pneumo.train.augment import AugmentConfig, affine_coefficients


def _uniform(seed, shape, lo, hi):
    return tf.random.stateless_uniform(shape, seed=seed, minval=lo, maxval=hi)


def _affine_transforms(cfg: AugmentConfig, n, size: int, seed) -> tf.Tensor:
    """Per-image 8-parameter projective transforms (output -> input coordinates)."""
    s = tf.random.experimental.stateless_split(seed, 6)
    deg = math.pi / 180.0
    theta = _uniform(s[0], [n], -cfg.rotation_deg * deg, cfg.rotation_deg * deg)
    zoom = _uniform(s[1], [n], 1.0 - cfg.zoom, 1.0 + cfg.zoom)
    shear = _uniform(s[2], [n], -cfg.shear_deg * deg, cfg.shear_deg * deg)
    tx = _uniform(s[3], [n], -cfg.shift, cfg.shift) * size
    ty = _uniform(s[4], [n], -cfg.shift, cfg.shift) * size
    flip = tf.where(_uniform(s[5], [n], 0.0, 1.0) < (0.5 if cfg.flip else 0.0), -1.0, 1.0)
    return affine_coefficients(theta, zoom, shear, tx, ty, flip, size, tf)


def _random_erasing(images: tf.Tensor, prob: float, seed) -> tf.Tensor:
    """Replace one random rectangle (10-35 % of each side) by the image mean, with prob."""
    n, size = tf.shape(images)[0], int(images.shape[1])
    s = tf.random.experimental.stateless_split(seed, 5)
    h = _uniform(s[0], [n, 1, 1, 1], 0.10, 0.35) * size
    w = _uniform(s[1], [n, 1, 1, 1], 0.10, 0.35) * size
    top = _uniform(s[2], [n, 1, 1, 1], 0.0, 1.0) * (size - h)
    left = _uniform(s[3], [n, 1, 1, 1], 0.0, 1.0) * (size - w)
    rows = tf.range(size, dtype=tf.float32)[None, :, None, None]
    cols = tf.range(size, dtype=tf.float32)[None, None, :, None]
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    inside &= _uniform(s[4], [n, 1, 1, 1], 0.0, 1.0) < prob
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return tf.where(inside, mean, images)


def augment_batch(images: tf.Tensor, cfg: AugmentConfig, seed) -> tf.Tensor:
    """Augment a float32 batch (B, S, S, 1) in [0, 1]; seed is a length-2 int tensor."""
    size = int(images.shape[1])
    n = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 8)
    if cfg.rotation_deg or cfg.zoom or cfg.shear_deg or cfg.shift or cfg.flip:
        transforms = _affine_transforms(cfg, n, size, seeds[0])
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=transforms,
            output_shape=tf.constant([size, size]),
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="REFLECT",
        )
    if cfg.lowres:
        # Blur by a down/up resize on a random half of the batch (older, softer detectors).
        small = max(8, int(size * (1.0 - cfg.lowres)))
        blurred = tf.image.resize(tf.image.resize(images, [small, small], "area"),
                                  [size, size], "bilinear")
        pick = _uniform(seeds[1], [n, 1, 1, 1], 0.0, 1.0) < 0.5
        images = tf.where(pick, blurred, images)
    if cfg.gamma:
        g = tf.exp(_uniform(seeds[2], [n, 1, 1, 1], -cfg.gamma, cfg.gamma))
        images = tf.pow(tf.clip_by_value(images, 1e-6, 1.0), g)
    if cfg.contrast:
        factor = _uniform(seeds[3], [n, 1, 1, 1], 1.0 - cfg.contrast, 1.0 + cfg.contrast)
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = (images - mean) * factor + mean
    if cfg.brightness:
        images = images + _uniform(seeds[4], [n, 1, 1, 1], -cfg.brightness, cfg.brightness)
    if cfg.noise:
        sigma = _uniform(seeds[5], [n, 1, 1, 1], 0.0, cfg.noise)
        images = images + sigma * tf.random.stateless_normal(tf.shape(images), seed=seeds[6])
    if cfg.erasing:
        images = _random_erasing(images, cfg.erasing, seeds[7])
    return tf.clip_by_value(images, 0.0, 1.0)
