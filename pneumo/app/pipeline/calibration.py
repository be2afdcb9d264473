"""Calibrated probabilities, as the model file describes them (the review band: pneumo.app.pipeline.outcome).

The model's metadata may carry ``calibration``: ``{"method": "platt", "a": A, "b": B, ...}``.
The calibrated probability is ``sigmoid(A * logit(p_raw) + B)`` with ``A > 0``, so it is a
monotonic map of the network's own output: rankings (AUC) do not change, only what the
number means. ``"method": "temperature"`` is the special case ``B = 0``, ``A = 1 / T``.
No ``calibration`` means the identity. The operating thresholds in the metadata are on the
calibrated scale. Fitting lives in `train.calibration`; this module only applies.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-7


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), clipped away from 0 and 1."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)), without overflow warnings."""
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def calibration_params(calibration: dict | None) -> tuple[float, float]:
    """(a, b) of a metadata ``calibration`` block; (1, 0) for none."""
    if not calibration:
        return 1.0, 0.0
    method = calibration.get("method", "platt")
    if method == "temperature":
        return 1.0 / float(calibration["temperature"]), 0.0
    if method == "platt":
        a, b = float(calibration["a"]), float(calibration["b"])
        if not a > 0:
            raise ValueError(f"calibration slope must be positive (monotonic), got {a}")
        return a, b
    if method == "none":
        return 1.0, 0.0
    raise ValueError(f"unknown calibration method {method!r}")


def apply_calibration(p_raw: np.ndarray, calibration: dict | None) -> np.ndarray:
    """Calibrated probabilities for raw model outputs (same shape, float64)."""
    a, b = calibration_params(calibration)
    if (a, b) == (1.0, 0.0):
        return np.asarray(p_raw, dtype=np.float64)
    return sigmoid(a * logit(p_raw) + b)
