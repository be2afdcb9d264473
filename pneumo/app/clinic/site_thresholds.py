"""Thresholds for this clinic, proposed from its own confirmed cases (numpy only).

A proposal applies the model's own rule (`pneumo.app.pipeline.operating_points`: balanced =
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

The guard rail (`guard`): a proposal that raises a threshold (fewer PNEUMONIA answers, so
possibly more missed pneumonias) may be accepted by a click only if the exact one-sided 95%
lower bound (Clopper-Pearson) of its cross-fitted sensitivity clears the setting's rule
(balanced 0.95, screening 0.98). The sensitivity is counted as hits x of the n confirmed
pneumonias, each scored by the threshold chosen on the half of the cases it was not in (one
seeded halving, `cross_fitted_counts`). Even with no miss that needs n >= 59 for 0.95 and
n >= 149 for 0.98 (`needed_pneumonias`: the smallest n with 0.05 ** (1 / n) >= rule). Lowering
a threshold (more PNEUMONIA answers) is always allowed; a blocked raise needs an override with
a reason and initials (`pneumo.app.clinic.site_profile.accept`), kept in the audit trail. Since the
screening threshold is the floor of the borderline (review) band, this also governs raising
that floor. Per 100 children the proposal shows expected referrals and missed pneumonias at a
pneumonia share (`per_100`); confirmed cases are those clinicians chose to confirm, so the
share among them may not be the clinic's, and the clinic lead may enter its own.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections import OrderedDict

import numpy as np

from pneumo.app.config import MIN_CASES_PER_CLASS
from pneumo.app.pipeline.operating_points import (
    MIN_SENSITIVITY,
    THRESHOLD_RULE,
    auc,
    operating_points,
    rates,
)

N_BOOT = 1000
N_CROSS_FIT = 50
MAX_PROPOSALS = 20
"""Proposals kept in memory (the newest) until one is accepted."""
GUARD_LEVEL = 0.95
"""Confidence of the guard rail's one-sided lower bound of sensitivity."""
_GUARD_STREAM = 7919
"""Seeds the guard's halving apart from the bootstrap, so those figures stay as they were."""
ALLOWED_VERDICTS = frozenset({"lowers", "unchanged", "raises_passes"})
"""Guard verdicts that need no override."""
PER_100_METHOD = (
    "Per 100 children at the pneumonia share shown (prevalence): expected referrals = "
    "100 * (share * sensitivity + (1 - share) * (1 - specificity)) and expected missed "
    "pneumonias = 100 * share * (1 - sensitivity). Sensitivity and specificity are counts on "
    "the confirmed cases: at the thresholds now in use as measured (they were not chosen on "
    "these cases), at the proposed thresholds cross-fitted (each case judged by the thresholds "
    "chosen on the half it was not in). Intervals are exact (Clopper-Pearson): missed "
    "pneumonias from the 95% interval of sensitivity; referrals from the 97.5% intervals of "
    "sensitivity and specificity taken at their extremes (Bonferroni: at least 95% together). "
    "The share is taken as known.")
"""How the per-100 figures and their intervals are computed (kept with each proposal)."""


class TooFewCases(ValueError):
    """Not enough confirmed cases of one class for a proposal."""

    def __init__(self, n_normal: int, n_pneumonia: int, minimum: int):
        self.n_normal, self.n_pneumonia, self.minimum = n_normal, n_pneumonia, minimum
        super().__init__(
            f"A proposal needs at least {minimum} confirmed NORMAL and {minimum} confirmed "
            f"PNEUMONIA cases analysed by this model; there are {n_normal} NORMAL and "
            f"{n_pneumonia} PNEUMONIA. Confirm more results and try again.")


class GuardRailBlocked(ValueError):
    """A proposal raises a threshold the confirmed pneumonias do not support (no override)."""

    def __init__(self, blocked: dict[str, dict]):
        self.blocked = blocked
        super().__init__("This proposal raises a threshold without enough evidence: "
                         + "; ".join(f"{m} {g['message']}" for m, g in blocked.items())
                         + ". Accept it only with an override (a reason and initials).")


def binomial_tail(x: int, n: int, p: float) -> float:
    """P(X >= x) for X ~ Binomial(n, p), summed in log space (numpy, exact to rounding)."""
    if x <= 0:
        return 1.0
    if x > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])
    k = np.arange(x, n + 1)
    terms = (log_fact[n] - log_fact[k] - log_fact[n - k]
             + k * math.log(p) + (n - k) * math.log1p(-p))
    top = float(terms.max())
    return min(1.0, math.exp(top) * float(np.exp(terms - top).sum()))


def lower_bound(x: int, n: int, level: float = GUARD_LEVEL) -> float:
    """Exact one-sided lower confidence bound of a proportion x/n (Clopper-Pearson).

    The p at which P(X >= x | n, p) = 1 - level, found by bisection (0 when x = 0; equals
    (1 - level) ** (1 / n) when x = n); the same as scipy.stats.beta.ppf(1 - level, x, n - x + 1).
    """
    if not 0 <= x <= n or n <= 0:
        raise ValueError(f"need 0 <= x <= n and n > 0, got x={x}, n={n}")
    alpha = 1.0 - level
    if x == 0:
        return 0.0
    if x == n:
        return alpha ** (1.0 / n)
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if binomial_tail(x, n, mid) < alpha:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return (lo + hi) / 2.0


def upper_bound(x: int, n: int, level: float = GUARD_LEVEL) -> float:
    """Exact one-sided upper confidence bound of a proportion x/n (Clopper-Pearson)."""
    return 1.0 - lower_bound(n - x, n, level)


def clopper_pearson(x: int, n: int, level: float = 0.95) -> list[float]:
    """The exact two-sided interval [low, high] of a proportion x/n ((1 - level) / 2 a side)."""
    one_sided = 1.0 - (1.0 - level) / 2.0
    return [lower_bound(x, n, one_sided), upper_bound(x, n, one_sided)]


def needed_pneumonias(rule: float, level: float = GUARD_LEVEL) -> int:
    """Fewest confirmed pneumonias whose lower bound can clear `rule` (none missed)."""
    alpha = 1.0 - level
    n = max(1, math.ceil(math.log(alpha) / math.log(rule)))
    while alpha ** (1.0 / n) < rule:  # guard against rounding either way
        n += 1
    while n > 1 and alpha ** (1.0 / (n - 1)) >= rule:
        n -= 1
    return n


NEEDED_PNEUMONIAS = {mode: needed_pneumonias(floor) for mode, floor in MIN_SENSITIVITY.items()}
"""Confirmed pneumonias a raise of each setting needs at least (59 balanced, 149 screening)."""


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


def guard_halves(y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The guard's two halves of the cases (indices), stratified by class, fixed by the seed."""
    y = np.asarray(y).astype(int)
    rng = np.random.default_rng([seed, _GUARD_STREAM])
    a_pos, a_neg = rng.permutation(np.flatnonzero(y == 1)), rng.permutation(np.flatnonzero(y == 0))
    return (np.concatenate([a_pos[: len(a_pos) // 2], a_neg[: len(a_neg) // 2]]),
            np.concatenate([a_pos[len(a_pos) // 2:], a_neg[len(a_neg) // 2:]]))


def cross_fitted_counts(y: np.ndarray, p: np.ndarray, seed: int = 0) -> dict[str, dict]:
    """Per mode: hits and true negatives, each case judged by the thresholds chosen on the
    half of the cases it was not in (`guard_halves`)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=np.float64)
    halves = guard_halves(y, seed)
    out = {m: {"hits": 0, "pneumonias": 0, "true_negatives": 0, "normals": 0}
           for m in MIN_SENSITIVITY}
    for fit, held in (halves, halves[::-1]):
        n_pos, n_neg = int(y[held].sum()), int(len(held) - y[held].sum())
        chosen = operating_points(y[fit], p[fit]) if y[fit].sum() else {}
        for mode, c in out.items():
            c["pneumonias"] += n_pos
            c["normals"] += n_neg
            if mode in chosen:  # a half without pneumonias chooses nothing: none counted right
                r = rates(y[held], p[held], chosen[mode])
                c["hits"] += r["tp"]
                c["true_negatives"] += r["tn"]
    return out


def direction(proposed: float, current: float | None) -> str:
    """'raises', 'lowers' or 'unchanged' (no current threshold: judged as a raise)."""
    if current is None or proposed > current + 1e-12:
        return "raises"
    return "lowers" if proposed < current - 1e-12 else "unchanged"


def guard(proposed: dict[str, float], current: dict[str, float], counts: dict[str, dict],
          *, level: float = GUARD_LEVEL) -> dict:
    """The guard rail's verdict for each mode, and whether the proposal is blocked."""
    modes = {}
    for mode, t in proposed.items():
        rule = MIN_SENSITIVITY.get(mode, max(MIN_SENSITIVITY.values()))
        c = counts.get(mode, {"hits": 0, "pneumonias": 0})
        x, n = int(c["hits"]), int(c["pneumonias"])
        bound = lower_bound(x, n, level) if n else 0.0
        needed = needed_pneumonias(rule, level)
        now = current.get(mode)
        way = direction(float(t), None if now is None else float(now))
        if way != "raises":
            verdict, message = way, f"{way}: allowed"
        elif n < needed:
            verdict = "raises_too_few"
            message = f"raises: blocked, needs {needed} confirmed pneumonias, has {n}"
        elif bound < rule:
            verdict = "raises_below_rule"
            message = f"raises: blocked, lower bound {bound:.3f} below rule {rule:.2f}"
        else:
            verdict = "raises_passes"
            message = f"raises: passes, lower bound {bound:.3f} >= rule {rule:.2f}"
        modes[mode] = {"direction": way, "current_threshold": None if now is None else float(now),
                       "proposed_threshold": float(t), "rule": rule, "hits": x, "pneumonias": n,
                       "missed": n - x, "lower_bound": round(bound, 4), "needed": needed,
                       "verdict": verdict, "allowed": verdict in ALLOWED_VERDICTS,
                       "message": message}
    return {"level": level, "blocked": not all(g["allowed"] for g in modes.values()),
            "modes": modes,
            "method": f"A raise is allowed when the exact one-sided {100 * level:.0f}% lower "
                      "bound (Clopper-Pearson) of the cross-fitted sensitivity (hits of the "
                      "confirmed pneumonias, each judged by the threshold chosen on the half "
                      "it was not in) clears the setting's rule; a lowering always is."}


def per_100(hits: int, pneumonias: int, true_negatives: int, normals: int,
            prevalence: float) -> dict:
    """Expected referrals and missed pneumonias per 100 children at a pneumonia share."""
    pi = float(prevalence)
    sens = hits / pneumonias if pneumonias else float("nan")
    spec = true_negatives / normals if normals else float("nan")
    s95 = clopper_pearson(hits, pneumonias, 0.95) if pneumonias else [0.0, 1.0]
    s975 = clopper_pearson(hits, pneumonias, 0.975) if pneumonias else [0.0, 1.0]
    c975 = clopper_pearson(true_negatives, normals, 0.975) if normals else [0.0, 1.0]

    def refer(se: float, sp: float) -> float:
        return round(100.0 * (pi * se + (1.0 - pi) * (1.0 - sp)), 2)

    def miss(se: float) -> float:
        return round(100.0 * pi * (1.0 - se), 2)

    return {"sensitivity": sens, "specificity": spec,
            "sensitivity_ci": [round(v, 4) for v in s95],
            "referrals": refer(sens, spec), "referrals_ci": [refer(s975[0], c975[1]),
                                                              refer(s975[1], c975[0])],
            "missed": miss(sens), "missed_ci": [miss(s95[1]), miss(s95[0])]}


def per_100_table(y: np.ndarray, p: np.ndarray, current: dict[str, float],
                  counts: dict[str, dict], prevalence: float) -> dict:
    """Per mode, the per-100 figures now (measured) and proposed (cross-fitted)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=np.float64)
    modes = {}
    for mode, c in counts.items():
        row = {"proposed": per_100(c["hits"], c["pneumonias"], c["true_negatives"], c["normals"],
                                   prevalence)}
        if mode in current:
            r = rates(y, p, current[mode])
            row["current"] = per_100(r["tp"], r["tp"] + r["fn"], r["tn"], r["tn"] + r["fp"],
                                     prevalence)
        modes[mode] = row
    return {"prevalence": float(prevalence), "modes": modes, "method": PER_100_METHOD}


def check_prevalence(value: object) -> float | None:
    """A pneumonia share 0 < value < 1 (None stays None); raises ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("the pneumonia share must be a number")
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError("the pneumonia share must be above 0 and below 1")
    return value


def propose(y: np.ndarray, p: np.ndarray, current: dict[str, float], *, seed: int = 0,
            minimum: int = MIN_CASES_PER_CLASS, prevalence: float | None = None) -> dict:
    """A threshold proposal from labelled probabilities (1 = PNEUMONIA); raises TooFewCases.

    ``prevalence``: the clinic's pneumonia share for the per-100 figures (default: the share
    among the confirmed cases); the guard rail compares with ``current`` (the thresholds in use).
    """
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=np.float64)
    entered = check_prevalence(prevalence)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos < minimum or n_neg < minimum:
        raise TooFewCases(n_neg, n_pos, minimum)
    rng = np.random.default_rng(seed)
    boot = [rng.integers(0, len(y), len(y)) for _ in range(N_BOOT)]
    boot = [i for i in boot if 0 < y[i].sum() < len(i)]
    proposed = operating_points(y, p)
    counts = cross_fitted_counts(y, p, seed)
    share = n_pos / (n_pos + n_neg)
    used = share if entered is None else entered
    return {
        "n": {"normal": n_neg, "pneumonia": n_pos},
        "thresholds": {m: float(t) for m, t in proposed.items()},  # exact: ties matter
        "rule": THRESHOLD_RULE,
        "guard": {**guard(proposed, current, counts), "cross_fitted_counts": counts, "seed": seed,
                  "needed_pneumonias": {m: needed_pneumonias(f) for m, f in
                                        MIN_SENSITIVITY.items()}},
        "prevalence": {"entered": entered, "confirmed_share": round(share, 4), "used": used,
                       "note": "Confirmed cases are the ones clinicians chose to confirm, so "
                               "their pneumonia share may not be the clinic's."},
        "per_100": per_100_table(y, p, current, counts, used),
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
