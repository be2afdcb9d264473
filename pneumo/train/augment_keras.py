"""Augmentation with keras.ops: `train.augment`'s transforms on any Keras backend.

Used where TensorFlow is not installed (e.g. `pneumo train --backend jax` on a GPU machine).
The random parameters of a batch come from a numpy generator seeded by (seed, epoch, batch
index), so a run is reproducible and a resumed run draws the same augmentations; the pixel
work runs on the backend's device. Same transforms, ranges and order as `train.augment_tf`,
with two differences: the draws come from numpy, not TensorFlow's stateless generator, and
the low-resolution blur shrinks with antialiased bilinear resizing (JAX has no "area" mode).
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops, random

from pneumo.train.augment import AugmentConfig, affine_coefficients


def affine_transforms(cfg: AugmentConfig, n: int, size: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Per-image 8-parameter projective transforms (output -> input coordinates), (n, 8)."""
    deg = math.pi / 180.0
    theta = rng.uniform(-cfg.rotation_deg * deg, cfg.rotation_deg * deg, n)
    zoom = rng.uniform(1.0 - cfg.zoom, 1.0 + cfg.zoom, n)
    shear = rng.uniform(-cfg.shear_deg * deg, cfg.shear_deg * deg, n)
    tx = rng.uniform(-cfg.shift, cfg.shift, n) * size
    ty = rng.uniform(-cfg.shift, cfg.shift, n) * size
    flip = np.where(rng.uniform(0.0, 1.0, n) < (0.5 if cfg.flip else 0.0), -1.0, 1.0)
    return affine_coefficients(theta, zoom, shear, tx, ty, flip, size, np).astype("float32")


def _per_image(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    return rng.uniform(lo, hi, (n, 1, 1, 1)).astype("float32")


def _random_erasing(images, prob: float, rng: np.random.Generator):
    """Replace one random rectangle (10-35 % of each side) by the image mean, with prob."""
    n, size = int(images.shape[0]), int(images.shape[1])
    h = _per_image(rng, n, 0.10, 0.35) * size
    w = _per_image(rng, n, 0.10, 0.35) * size
    top = _per_image(rng, n, 0.0, 1.0) * (size - h)
    left = _per_image(rng, n, 0.0, 1.0) * (size - w)
    rows = np.arange(size, dtype="float32")[None, :, None, None]
    cols = np.arange(size, dtype="float32")[None, None, :, None]
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    inside &= _per_image(rng, n, 0.0, 1.0) < prob
    mean = ops.mean(images, axis=(1, 2, 3), keepdims=True)
    return ops.where(inside, mean, images)


def augment_batch(images, cfg: AugmentConfig, rng: np.random.Generator):
    """Augment a float32 batch (B, S, S, 1) in [0, 1]; returns a backend tensor."""
    n, size = int(images.shape[0]), int(images.shape[1])
    images = ops.convert_to_tensor(images, dtype="float32")
    if cfg.rotation_deg or cfg.zoom or cfg.shear_deg or cfg.shift or cfg.flip:
        images = ops.image.affine_transform(
            images, affine_transforms(cfg, n, size, rng), interpolation="bilinear",
            fill_mode="reflect")
    if cfg.lowres:
        # Blur by a down/up resize on a random half of the batch (older, softer detectors).
        small = max(8, int(size * (1.0 - cfg.lowres)))
        blurred = ops.image.resize(ops.image.resize(images, (small, small), antialias=True),
                                   (size, size), interpolation="bilinear")
        images = ops.where(_per_image(rng, n, 0.0, 1.0) < 0.5, blurred, images)
    if cfg.gamma:
        g = np.exp(_per_image(rng, n, -cfg.gamma, cfg.gamma))
        images = ops.power(ops.clip(images, 1e-6, 1.0), g)
    if cfg.contrast:
        factor = _per_image(rng, n, 1.0 - cfg.contrast, 1.0 + cfg.contrast)
        mean = ops.mean(images, axis=(1, 2, 3), keepdims=True)
        images = (images - mean) * factor + mean
    if cfg.brightness:
        images = images + _per_image(rng, n, -cfg.brightness, cfg.brightness)
    if cfg.noise:
        sigma = _per_image(rng, n, 0.0, cfg.noise)
        noise_seed = int(rng.integers(0, 2**31 - 1))
        images = images + sigma * random.normal(ops.shape(images), seed=noise_seed)
    if cfg.erasing:
        images = _random_erasing(images, cfg.erasing, rng)
    return ops.clip(images, 0.0, 1.0)
