"""Classification metrics, operating thresholds and bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

SCREENING_MIN_SENSITIVITY = 0.95


def choose_thresholds(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Operating points on validation data: 'balanced' (Youden's J) and 'screening'.

    'screening' is the threshold with the highest specificity whose sensitivity is still
    at least 0.95.
    """
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    fpr, tpr, thr = roc_curve(y, p)
    thr = np.clip(thr, 0.0, 1.0)
    j = int(np.argmax(tpr - fpr))
    ok = np.flatnonzero(tpr >= SCREENING_MIN_SENSITIVITY)
    k = int(ok[np.argmin(fpr[ok])]) if len(ok) else len(thr) - 1
    # roc_curve's thresholds are scores of real samples; p >= t is "PNEUMONIA".
    return {"balanced": float(thr[j]), "screening": float(thr[k])}


def metrics_at(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, precision, F1 and AUC at one threshold."""
    y = np.asarray(y).astype(int)
    pred = (np.asarray(p) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    both = len(np.unique(y)) == 2
    return {
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(y, pred)),
        "sensitivity": float(recall_score(y, pred, zero_division=0)),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp),
    }


CI_KEYS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc")


def bootstrap_ci(y: np.ndarray, p: np.ndarray, threshold: float, *, n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap CIs (resampling images) for each metric of metrics_at."""
    y, p = np.asarray(y).astype(int), np.asarray(p)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in CI_KEYS}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) < 2:
            continue
        m = metrics_at(y[idx], p[idx], threshold)
        for k in CI_KEYS:
            draws[k].append(m[k])
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {k: [float(np.nanpercentile(v, lo)), float(np.nanpercentile(v, hi))]
            for k, v in draws.items() if v}
