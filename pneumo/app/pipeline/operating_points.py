"""The rule that turns labelled scores into operating thresholds (numpy only).

One definition for the model's own operating points (chosen at export on external
validation, `train.calibration`) and for a clinic's site thresholds
(`pneumo.app.clinic.site_thresholds`): ``balanced`` is the threshold with the highest specificity
subject to sensitivity >= 0.95, ``screening`` the same with sensitivity >= 0.98; among equal
specificities the highest threshold; a score >= threshold is called PNEUMONIA.
"""

from __future__ import annotations

import numpy as np

BALANCED_MIN_SENSITIVITY = 0.95
SCREENING_MIN_SENSITIVITY = 0.98
MIN_SENSITIVITY = {"balanced": BALANCED_MIN_SENSITIVITY, "screening": SCREENING_MIN_SENSITIVITY}
"""Each mode's sensitivity floor."""

THRESHOLD_RULE = (
    f"balanced: the threshold with the highest specificity subject to sensitivity >= "
    f"{BALANCED_MIN_SENSITIVITY:.2f}; screening: the same with sensitivity >= "
    f"{SCREENING_MIN_SENSITIVITY:.2f}; among equal specificities the highest "
    f"threshold; scores >= threshold are called PNEUMONIA"
)


def threshold_for_sensitivity(y: np.ndarray, p: np.ndarray, min_sensitivity: float) -> float:
    """The threshold with the highest specificity subject to sensitivity >= min_sensitivity.

    Candidates are the distinct scores (a score >= threshold is called PNEUMONIA); among
    candidates with equal specificity the highest is taken. Raises ValueError without
    positives.
    """
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    if not len(pos):
        raise ValueError("threshold_for_sensitivity needs at least one positive example")
    cand = np.unique(p)
    # sensitivity(t) = share of positives >= t; specificity(t) = share of negatives < t
    sens = (len(pos) - np.searchsorted(pos, cand, side="left")) / len(pos)
    spec = (np.searchsorted(neg, cand, side="left") / len(neg) if len(neg)
            else np.zeros(len(cand)))
    ok = sens >= min_sensitivity - 1e-12
    best = spec[ok].max()
    return float(cand[ok][spec[ok] >= best - 1e-12].max())


def operating_points(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """{'balanced': sensitivity >= 0.95 rule, 'screening': sensitivity >= 0.98 rule}."""
    return {mode: threshold_for_sensitivity(y, p, floor) for mode, floor in MIN_SENSITIVITY.items()}


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); nan with one class."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=np.float64)
    n1, n0 = int(y.sum()), int(len(y) - y.sum())
    if not n1 or not n0:
        return float("nan")
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # average ranks over ties
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def rates(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity and accuracy at one threshold (score >= threshold: positive)."""
    y, pred = np.asarray(y).astype(int), np.asarray(p) >= threshold
    tp, fn = int((pred & (y == 1)).sum()), int((~pred & (y == 1)).sum())
    tn, fp = int((~pred & (y == 0)).sum()), int((pred & (y == 0)).sum())
    return {"sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan"),
            "accuracy": (tp + tn) / len(y) if len(y) else float("nan"),
            "tp": tp, "fn": fn, "tn": tn, "fp": fp}
