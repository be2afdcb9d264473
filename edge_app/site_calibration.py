"""Thresholds for this clinic, proposed from its own confirmed cases (numpy only).

A proposal applies the model's own rule (`edge_app.operating_points`: balanced =
sensitivity >= 0.95, screening = sensitivity >= 0.98, each with the highest specificity) to
the clinic's confirmed NORMAL/PNEUMONIA cases, on the same (calibrated) probability scale as
the model's thresholds. It reports the local ROC and sensitivity/specificity at the current
and at the proposed thresholds with 95% bootstrap intervals (cases resampled), plus a
cross-fitted estimate (thresholds chosen on one half of the cases, measured on the other),
because figures measured on the very cases that chose the thresholds are optimistic.

Why at least 25 cases of each class (`MIN_CASES_PER_CLASS`): the thresholds sit near the
5th and 2nd percentile of the pneumonia scores, so with fewer positives the sensitivity
floor cannot be checked at all (with 25 positives and none missed, the one-sided 95% lower
bound of sensitivity is already only 1 - 3/25 = 0.88, the "rule of three"), and with fewer
than 25 normals a specificity of 0.8 has a 95% interval wider than +/- 0.16: too wide to
tell a better threshold from chance. A hundred cases (about 40 and 60) is the recommended
first calibration; more cases narrow the intervals.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections import OrderedDict

import numpy as np

from edge_app.operating_points import MIN_SENSITIVITY, THRESHOLD_RULE, operating_points

MIN_CASES_PER_CLASS = 25
"""Fewest confirmed cases of each class a proposal needs (see the module docstring)."""
N_BOOT = 1000
N_CROSS_FIT = 50
MAX_PROPOSALS = 20
"""Proposals kept in memory (the newest) until one is accepted."""


class TooFewCases(ValueError):
    """Not enough confirmed cases of one class for a proposal."""

    def __init__(self, n_normal: int, n_pneumonia: int, minimum: int):
        self.n_normal, self.n_pneumonia, self.minimum = n_normal, n_pneumonia, minimum
        super().__init__(
            f"A proposal needs at least {minimum} confirmed NORMAL and {minimum} confirmed "
            f"PNEUMONIA cases analysed by this model; there are {n_normal} NORMAL and "
            f"{n_pneumonia} PNEUMONIA. Confirm more results and try again.")


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); nan with one class."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=np.float64)
    n1, n0 = int(y.sum()), int(len(y) - y.sum())
    if not n1 or not n0:
        return float("nan")
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # average ranks over ties
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def roc_points(y: np.ndarray, p: np.ndarray) -> dict[str, list[float]]:
    """The ROC curve's corners: false-positive rate, true-positive rate, threshold."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=np.float64)
    cand = np.unique(p)[::-1]
    pos, neg = max(int(y.sum()), 1), max(int(len(y) - y.sum()), 1)
    fpr, tpr = [0.0], [0.0]
    for t in cand:
        pred = p >= t
        tpr.append(float((pred & (y == 1)).sum() / pos))
        fpr.append(float((pred & (y == 0)).sum() / neg))
    return {"fpr": fpr, "tpr": tpr, "threshold": [1.0, *[float(t) for t in cand]]}


def rates(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity and accuracy at one threshold (score >= threshold: positive)."""
    y, pred = np.asarray(y).astype(int), np.asarray(p) >= threshold
    tp, fn = int((pred & (y == 1)).sum()), int((~pred & (y == 1)).sum())
    tn, fp = int((~pred & (y == 0)).sum()), int((pred & (y == 0)).sum())
    return {"sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan"),
            "accuracy": (tp + tn) / len(y) if len(y) else float("nan"),
            "tp": tp, "fn": fn, "tn": tn, "fp": fp}


def _ci(values: list[float]) -> list[float]:
    """The 95% percentile interval of bootstrap values."""
    arr = np.asarray([v for v in values if not math.isnan(v)])
    return [float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5))] if len(arr) else []


def _at(y: np.ndarray, p: np.ndarray, thresholds: dict[str, float], boot: list[np.ndarray]
        ) -> dict[str, dict]:
    """Rates at each mode's threshold, with bootstrap intervals."""
    out = {}
    for mode, t in thresholds.items():
        r = rates(y, p, t)
        draws = [rates(y[i], p[i], t) for i in boot]
        out[mode] = {"threshold": float(t), **r,
                     **{f"{k}_ci": _ci([d[k] for d in draws])
                        for k in ("sensitivity", "specificity", "accuracy")}}
    return out


def _cross_fitted(y: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> dict[str, dict]:
    """Mean rates of thresholds chosen on one half of the cases, measured on the other."""
    sums: dict[str, dict[str, list[float]]] = {m: {"sensitivity": [], "specificity": []}
                                               for m in MIN_SENSITIVITY}
    idx_pos, idx_neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    for _ in range(N_CROSS_FIT):
        a_pos, a_neg = rng.permutation(idx_pos), rng.permutation(idx_neg)
        halves = (np.concatenate([a_pos[: len(a_pos) // 2], a_neg[: len(a_neg) // 2]]),
                  np.concatenate([a_pos[len(a_pos) // 2:], a_neg[len(a_neg) // 2:]]))
        for fit, held in (halves, halves[::-1]):
            for mode, t in operating_points(y[fit], p[fit]).items():
                r = rates(y[held], p[held], t)
                sums[mode]["sensitivity"].append(r["sensitivity"])
                sums[mode]["specificity"].append(r["specificity"])
    return {m: {k: round(float(np.nanmean(v)), 4) for k, v in d.items()} for m, d in sums.items()}


def propose(y: np.ndarray, p: np.ndarray, current: dict[str, float], *, seed: int = 0,
            minimum: int = MIN_CASES_PER_CLASS) -> dict:
    """A threshold proposal from labelled probabilities (1 = PNEUMONIA); raises TooFewCases."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos < minimum or n_neg < minimum:
        raise TooFewCases(n_neg, n_pos, minimum)
    rng = np.random.default_rng(seed)
    boot = [rng.integers(0, len(y), len(y)) for _ in range(N_BOOT)]
    boot = [i for i in boot if 0 < y[i].sum() < len(i)]
    proposed = operating_points(y, p)
    return {
        "n": {"normal": n_neg, "pneumonia": n_pos},
        "thresholds": {m: float(t) for m, t in proposed.items()},  # exact: ties matter
        "rule": THRESHOLD_RULE,
        "metrics": {
            "auc": round(auc(y, p), 4),
            "auc_ci": _ci([auc(y[i], p[i]) for i in boot]),
            "current": _at(y, p, current, boot),
            "proposed": _at(y, p, proposed, boot),
            "proposed_cross_fitted": _cross_fitted(y, p, rng),
            "roc": roc_points(y, p),
            "bootstrap": {"resamples": len(boot), "seed": seed, "level": 0.95},
            "note": "Intervals resample the cases. The 'proposed' figures are measured on the "
                    "same cases that chose the thresholds (optimistic); "
                    "'proposed_cross_fitted' chooses on one half and measures on the other "
                    f"({N_CROSS_FIT} random halvings), closer to what later patients will see.",
        },
    }


class Proposals:
    """The newest proposals, by id, until one is accepted (in memory, thread-safe)."""

    def __init__(self, keep: int = MAX_PROPOSALS):
        self.keep = keep
        self._items: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, proposal: dict) -> dict:
        """Give the proposal an id, keep it (dropping the oldest beyond `keep`), return it."""
        proposal = {"id": uuid.uuid4().hex, **proposal}
        with self._lock:
            self._items[proposal["id"]] = proposal
            while len(self._items) > self.keep:
                self._items.popitem(last=False)
        return proposal

    def get(self, proposal_id: str) -> dict | None:
        """A kept proposal, or None."""
        with self._lock:
            return self._items.get(proposal_id)
