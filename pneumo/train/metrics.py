"""Classification metrics, operating thresholds and bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

from pneumo.app.pipeline import operating_points as _ops
from pneumo.app.pipeline.operating_points import auc

# The app's documented rule: screening keeps sensitivity >= 0.98 (one source, the app's).
SCREENING_MIN_SENSITIVITY = _ops.SCREENING_MIN_SENSITIVITY


def _youden(y: np.ndarray, p: np.ndarray, t: float) -> float:
    pred = p >= t
    pos, neg = y == 1, y == 0
    return float(pred[pos].mean() - pred[neg].mean()) if pos.any() and neg.any() else 0.0


def threshold_details(y: np.ndarray, p: np.ndarray, *, n_boot: int = 200, seed: int = 0
                      ) -> dict[str, float]:
    """The operating thresholds and how they were found (see choose_thresholds)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=np.float64)
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)  # every distinct score
    thr = np.clip(thr, 0.0, 1.0)
    j = tpr - fpr
    k_max = int(np.argmax(j))
    t_max = float(thr[k_max])
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) == 2:
            boots.append(_youden(y[idx], p[idx], t_max))
    se = float(np.std(boots)) if boots else 0.0
    plateau = thr[j >= j[k_max] - se]
    balanced = float(plateau.max())
    ok = np.flatnonzero(tpr >= SCREENING_MIN_SENSITIVITY)
    t_sens = float(thr[ok[np.argmin(fpr[ok])]]) if len(ok) else float(thr[-1])
    screening = min(t_sens, t_max, balanced)
    return {"balanced": balanced, "screening": screening, "youden_max_threshold": t_max,
            "youden_max": float(j[k_max]), "youden_se": se,
            "screening_sensitivity_threshold": t_sens}


def choose_thresholds(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Operating points on validation data: 'balanced' and 'screening'.

    'balanced' maximises Youden's J. A validation split carved from the training data is
    nearly separable, so J is flat over a wide range of thresholds; of the thresholds whose
    J is within one bootstrap standard error of the maximum (which validation cannot tell
    apart), it takes the highest: the one that calls pneumonia least readily, because models
    of this kind over-call pneumonia on normal images from other acquisitions.
    'screening' is the highest threshold with sensitivity >= 0.98, but never above the
    threshold of maximal J: screening is at least as sensitive as the J optimum and as
    'balanced'. Scores >= threshold are called PNEUMONIA.
    """
    d = threshold_details(y, p)
    return {"balanced": d["balanced"], "screening": d["screening"]}


def auc_rows(y: np.ndarray, p_rows: np.ndarray) -> np.ndarray:
    """ROC AUC of every row of p_rows against the same labels y (ties count one half)."""
    pos = np.asarray(y).astype(int) == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if not n1 or not n0:
        return np.full(len(p_rows), np.nan)
    ranks = rankdata(p_rows, axis=1)
    return (ranks[:, pos].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def metrics_at(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, precision, F1 and AUC at one threshold.

    The rates come from the app's one rate function; a rate with no case to count (no
    pneumonia, no positive call) is NaN, shown as "-" in reports, never 0.
    """
    r = _ops.rates(y, p, threshold)
    tp, fp, fn = r["tp"], r["fp"], r["fn"]
    return {
        "threshold": float(threshold),
        "accuracy": r["accuracy"],
        "sensitivity": r["sensitivity"],
        "specificity": r["specificity"],
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else float("nan"),
        "auc": auc(y, p),
        "tn": r["tn"], "fp": fp, "fn": fn, "tp": tp,
    }


def figure(value: float | None, digits: int = 3) -> str:
    """A rate or score for a report: "-" when it is undefined (NaN), never 0."""
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def figure_with_ci(m: dict, key: str, digits: int = 3) -> str:
    """``value (low-high)`` from a metrics dict with ``ci95``: "-" when the value is undefined,
    the value alone when its interval is."""
    lo, hi = m.get("ci95", {}).get(key, [float("nan")] * 2)
    if figure(m[key]) == "-" or "-" in (figure(lo), figure(hi)):
        return figure(m[key], digits)
    return f"{figure(m[key], digits)} ({figure(lo, digits)}-{figure(hi, digits)})"


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


def specificity_at_sensitivity(y: np.ndarray, p: np.ndarray, min_sensitivity: float) -> float:
    """The best specificity any threshold reaches while keeping sensitivity >= min_sensitivity."""
    y = np.asarray(y).astype(int)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if not n1 or not n0:
        return float("nan")
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # last image of each distinct score
    tpr = np.r_[0.0, np.cumsum(ys)[last] / n1]
    fpr = np.r_[0.0, np.cumsum(1 - ys)[last] / n0]
    ok = tpr >= min_sensitivity
    return float(1.0 - fpr[ok].min()) if ok.any() else 0.0


# Operating points chosen on external validation (half of the official test split): the
# rule lives in pneumo.app.pipeline.operating_points (shared with the app's site thresholds). The old
# internal rule above (choose_thresholds) shares its screening sensitivity.
BALANCED_MIN_SENSITIVITY = _ops.BALANCED_MIN_SENSITIVITY
EXTERNAL_THRESHOLD_RULE = _ops.THRESHOLD_RULE
threshold_for_sensitivity = _ops.threshold_for_sensitivity


def external_operating_points(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """{'balanced': sensitivity >= 0.95 rule, 'screening': sensitivity >= 0.98 rule}."""
    return _ops.operating_points(y, p)
