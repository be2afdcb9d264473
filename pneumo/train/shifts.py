"""Acquisition shifts: real images as another X-ray machine or exposure might render them.

Used to check that the model and its out-of-distribution check are robust to the
differences between hospitals (contrast, exposure, gamma, noise, resolution), which matter
more on unseen data than a last point of AUC on a split carved from the training set.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

SHIFTS: dict[str, dict] = {
    "gamma 0.7": {"gamma": 0.7},
    "gamma 1.4": {"gamma": 1.4},
    "contrast 0.7": {"contrast": 0.7},
    "contrast 1.3": {"contrast": 1.3},
    "brighter +0.08": {"shift": 0.08},
    "darker -0.08": {"shift": -0.08},
    "noise 0.03": {"noise": 0.03},
    "blur 1.5px": {"blur": 1.5},
}


def apply_shift(x: np.ndarray, *, gamma: float = 1.0, contrast: float = 1.0, shift: float = 0.0,
                noise: float = 0.0, blur: float = 0.0, seed: int = 0) -> np.ndarray:
    """Apply one acquisition change to a float batch (N, S, S, 1) in [0, 1]."""
    v = np.clip(x, 1e-6, 1.0) ** gamma
    mean = v.mean(axis=(1, 2, 3), keepdims=True)
    v = (v - mean) * contrast + mean + shift
    if noise:
        v = v + noise * np.random.default_rng(seed).standard_normal(v.shape)
    if blur:
        u8 = np.round(np.clip(v, 0, 1) * 255).astype(np.uint8)
        v = np.stack([
            np.asarray(Image.fromarray(im[..., 0]).filter(ImageFilter.GaussianBlur(blur)),
                       dtype=np.float32)[..., None] / 255.0 for im in u8
        ])
    return np.clip(v, 0.0, 1.0).astype(np.float32)


def shifted_versions(x: np.ndarray) -> dict[str, np.ndarray]:
    """Every named shift of a float batch."""
    return {name: apply_shift(x, **kw) for name, kw in SHIFTS.items()}
