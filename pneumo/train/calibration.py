"""Fitting probability calibration and measuring it honestly (numpy + scikit-learn only).

A calibration is the metadata block that `pneumo.app.pipeline.calibration` applies:
``{"method": "platt", "a": A, "b": B, ...}``, calibrated p = sigmoid(A * logit(p_raw) + B)
with A > 0 (a monotonic map: AUC is unchanged). Two fits are offered: Platt scaling (slope
and intercept) and temperature scaling (slope only, B = 0, stored as a Platt block with
``"fit": "temperature"`` and ``"temperature": 1 / A``).

The operating points and the calibration are chosen on the same small labelled set (the
external validation set), so figures measured on that set are optimistic. `cross_fit`
measures them honestly: the set is split in two halves by patient (stratified by class,
seeded); calibration and thresholds are fitted on one half and measured on the other, then
the halves swap; it reports the mean of the two halves and the pooled out-of-half
predictions (with bootstrap CIs).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from pneumo.app.pipeline.calibration import apply_calibration, logit
from pneumo.app.pipeline.outcome import in_review_band
from pneumo.train.data import EXTERNAL_LABEL, patient_id
from pneumo.train.metrics import external_operating_points

log = logging.getLogger(__name__)

FITS = ("platt", "temperature")
METHODS = ("auto", *FITS)
A_MIN = 1e-3  # the slope is forced above this: the calibrated map stays increasing
MODES = ("balanced", "screening")
_LABEL_KEYS = ("accuracy", "sensitivity", "specificity")


def _targets(y: np.ndarray, smooth: bool) -> np.ndarray:
    """Platt's smoothed targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2), or the labels."""
    y = np.asarray(y).astype(int)
    if not smooth:
        return y.astype(np.float64)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    return np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))


def _weighted_logreg(z: np.ndarray, t: np.ndarray, fit_intercept: bool) -> tuple[float, float]:
    """Unpenalised logistic regression of soft targets t on z: (slope, intercept)."""
    x = np.r_[z, z][:, None]
    labels = np.r_[np.ones(len(z), int), np.zeros(len(z), int)]
    weights = np.r_[t, 1.0 - t]
    lr = LogisticRegression(C=np.inf, fit_intercept=fit_intercept, max_iter=1000)
    lr.fit(x, labels, sample_weight=weights)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0]) if fit_intercept else 0.0


def _intercept_given_slope(z: np.ndarray, t: np.ndarray, a: float) -> float:
    """Maximum-likelihood intercept with the slope held fixed (Newton's method)."""
    b = 0.0
    for _ in range(50):
        s = 1.0 / (1.0 + np.exp(-(a * z + b)))
        grad, hess = float(np.sum(s - t)), float(np.sum(s * (1.0 - s))) + 1e-12
        step = grad / hess
        b -= step
        if abs(step) < 1e-10:
            break
    return float(b)


def _fit_slope(y: np.ndarray, p_raw: np.ndarray, *, intercept: bool, smooth: bool
               ) -> tuple[float, float, int]:
    """(a, b, n) of sigmoid(a * logit(p_raw) + b) fitted to y; a held above A_MIN (b = 0
    without an intercept), so the calibrated map stays increasing."""
    z, t = logit(p_raw), _targets(y, smooth)
    a, b = _weighted_logreg(z, t, fit_intercept=intercept)
    if not a > A_MIN:
        log.warning("calibration slope %.4g is not positive: held at %g", a, A_MIN)
        a = A_MIN
        b = _intercept_given_slope(z, t, a) if intercept else 0.0
    return a, (b if intercept else 0.0), int(len(z))


def fit_platt(y: np.ndarray, p_raw: np.ndarray, *, smooth: bool = True) -> dict:
    """Platt scaling: logistic regression of y on logit(p_raw), slope forced > 0."""
    a, b, n = _fit_slope(y, p_raw, intercept=True, smooth=smooth)
    return {"method": "platt", "a": a, "b": b, "fit": "platt", "n": n}


def fit_temperature(y: np.ndarray, p_raw: np.ndarray, *, smooth: bool = True) -> dict:
    """Temperature scaling: p = sigmoid(logit(p_raw) / T), stored as Platt with b = 0."""
    a, b, n = _fit_slope(y, p_raw, intercept=False, smooth=smooth)
    return {"method": "platt", "a": a, "b": b, "fit": "temperature", "temperature": 1.0 / a,
            "n": n}


def fit_calibration(y: np.ndarray, p_raw: np.ndarray, fit: str) -> dict:
    """Fit 'platt' or 'temperature'."""
    if fit == "platt":
        return fit_platt(y, p_raw)
    if fit == "temperature":
        return fit_temperature(y, p_raw)
    raise ValueError(f"unknown calibration fit {fit!r}; use one of {FITS}")


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    return np.clip((np.asarray(p, dtype=np.float64) * n_bins).astype(int), 0, n_bins - 1)


def reliability_bins(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> dict[str, list]:
    """Equal-width bins on [0, 1]: edges, count, mean predicted p and fraction positive."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    idx = _bin_index(p, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, frac = sum_p / count, sum_y / count
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "count": count.astype(int).tolist(),
        "mean_predicted": [None if c == 0 else float(v) for c, v in zip(count, mean_p,
                                                                        strict=True)],
        "fraction_positive": [None if c == 0 else float(v) for c, v in zip(count, frac,
                                                                           strict=True)],
    }


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE: |fraction positive - mean p| per equal-width bin, weighted by the bin's share."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    if not len(y):
        return float("nan")
    idx = _bin_index(p, n_bins)
    gap = np.abs(np.bincount(idx, weights=y, minlength=n_bins)
                 - np.bincount(idx, weights=p, minlength=n_bins))
    return float(gap.sum() / len(y))  # sum_b n_b / N * |sum y_b - sum p_b| / n_b


def split_halves(names: Sequence[str], y: np.ndarray, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Two halves (index arrays) grouped by patient (train.data.patient_id), stratified by class.

    Patients are shuffled with `seed` within each class (a patient's class is the highest
    label among their images) and each goes to the half that has fewer images of that class.
    """
    y = np.asarray(y).astype(int)
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(patient_id(name), []).append(i)
    rng = random.Random(seed)
    halves: tuple[list[int], list[int]] = ([], [])
    for label in sorted(set(y.tolist())):
        ids = sorted(pid for pid, idx in groups.items() if max(y[idx]) == label)
        rng.shuffle(ids)
        counts = [0, 0]
        for pid in ids:
            side = 0 if counts[0] < counts[1] else 1 if counts[1] < counts[0] else rng.randrange(2)
            halves[side].extend(groups[pid])
            counts[side] += len(groups[pid])
    return np.sort(np.array(halves[0], int)), np.sort(np.array(halves[1], int))


def _label_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy, sensitivity, specificity and counts of fixed predicted labels."""
    y, pred = np.asarray(y).astype(int), np.asarray(pred).astype(int)
    tp, fn = int(((pred == 1) & (y == 1)).sum()), int(((pred == 0) & (y == 1)).sum())
    tn, fp = int(((pred == 0) & (y == 0)).sum()), int(((pred == 1) & (y == 0)).sum())
    return {
        "accuracy": float((tp + tn) / len(y)) if len(y) else float("nan"),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "tn": tn, "fp": fp, "fn": fn, "tp": tp,
    }


def borderline_stats(y: np.ndarray, p: np.ndarray, thresholds: dict[str, float]) -> dict:
    """Share of images in the review band (pneumo.app.pipeline.outcome.in_review_band) and the
    accuracy outside it (where both modes give the same label)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=np.float64)
    border = np.array([in_review_band(float(v), thresholds) for v in p],
                      dtype=bool)
    outside = ~border
    pred = (p >= float(thresholds["balanced"])).astype(int)
    return {
        "band": sorted([float(thresholds["screening"]), float(thresholds["balanced"])]),
        "share": float(border.mean()) if len(p) else float("nan"),
        "n_in_band": int(border.sum()),
        "accuracy_outside": float((pred[outside] == y[outside]).mean()) if outside.any()
        else float("nan"),
        "n_outside": int(outside.sum()),
    }


def calibrated(p_raw: np.ndarray, calibration: dict | None) -> np.ndarray:
    """Calibrated probabilities rounded to float32, exactly as the app computes them
    (pneumo.app.pipeline.onnx_model.OnnxModel.calibrate), so thresholds chosen on them hold in the app."""
    return apply_calibration(p_raw, calibration).astype(np.float32).astype(np.float64)


def _half_result(y: np.ndarray, p_raw: np.ndarray, fit_idx: np.ndarray, eval_idx: np.ndarray,
                 fit: str, n_bins: int) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    """Fit calibration and thresholds on fit_idx, measure on eval_idx."""
    cal = fit_calibration(y[fit_idx], p_raw[fit_idx], fit)
    thresholds = external_operating_points(y[fit_idx], calibrated(p_raw[fit_idx], cal))
    ye, pe = y[eval_idx], calibrated(p_raw[eval_idx], cal)
    preds = {m: (pe >= thresholds[m]).astype(int) for m in MODES}
    res = {
        "n_fit": int(len(fit_idx)), "n_eval": int(len(eval_idx)),
        "calibration": {k: cal[k] for k in ("a", "b")},
        "thresholds": thresholds,
        **{m: {"threshold": thresholds[m], **_label_metrics(ye, preds[m])} for m in MODES},
        "auc": float(roc_auc_score(ye, pe)) if len(np.unique(ye)) == 2 else float("nan"),
        "ece_before": expected_calibration_error(ye, p_raw[eval_idx], n_bins),
        "ece_after": expected_calibration_error(ye, pe, n_bins),
        "borderline": borderline_stats(ye, pe, thresholds),
    }
    return res, pe, preds


def _pooled(y: np.ndarray, p_raw: np.ndarray, p_cf: np.ndarray, preds: dict[str, np.ndarray],
            border: np.ndarray, n_bins: int) -> dict:
    outside = ~border
    return {
        **{m: _label_metrics(y, preds[m]) for m in MODES},
        "auc": float(roc_auc_score(y, p_cf)) if len(np.unique(y)) == 2 else float("nan"),
        "ece_before": expected_calibration_error(y, p_raw, n_bins),
        "ece_after": expected_calibration_error(y, p_cf, n_bins),
        "borderline_share": float(border.mean()),
        "accuracy_outside_borderline": float((preds["balanced"][outside] == y[outside]).mean())
        if outside.any() else float("nan"),
    }


def _flat(d: dict) -> dict[str, float]:
    """{'balanced.accuracy': ..., 'auc': ...} of the numeric figures worth a CI."""
    out = {f"{m}.{k}": d[m][k] for m in MODES for k in _LABEL_KEYS}
    out.update({k: d[k] for k in ("auc", "ece_before", "ece_after", "borderline_share",
                                  "accuracy_outside_borderline")})
    return out


def cross_fit(y: np.ndarray, p_raw: np.ndarray, names: Sequence[str], *, fit: str = "platt",
              seed: int = 0, n_bins: int = 10, n_boot: int = 1000) -> dict:
    """Fit calibration + thresholds on one patient-grouped half, measure on the other, swap.

    Returns per-half figures, their mean, the pooled out-of-half predictions (each image
    labelled with the thresholds of the half it was not in) with percentile bootstrap CIs
    (images resampled; calibration and thresholds not refitted), and the arrays
    `p_crossfit` (out-of-half calibrated probabilities) and `halves`.
    """
    y, p_raw = np.asarray(y).astype(int), np.asarray(p_raw, dtype=np.float64)
    a_idx, b_idx = split_halves(names, y, seed)
    for idx in (a_idx, b_idx):
        if len(np.unique(y[idx])) < 2:
            raise ValueError("cross-fitting needs both classes in each half: too few images")
    p_cf = np.zeros(len(y))
    preds = {m: np.zeros(len(y), int) for m in MODES}
    border = np.zeros(len(y), bool)
    halves = []
    for name, fit_idx, eval_idx in (("fit A, measure B", a_idx, b_idx),
                                    ("fit B, measure A", b_idx, a_idx)):
        res, pe, pr = _half_result(y, p_raw, fit_idx, eval_idx, fit, n_bins)
        halves.append({"name": name, **res})
        p_cf[eval_idx] = pe
        for m in MODES:
            preds[m][eval_idx] = pr[m]
        border[eval_idx] = [in_review_band(float(v), res["thresholds"])
                            for v in pe]
    mean = {m: {k: float(np.mean([h[m][k] for h in halves])) for k in
                ("threshold", *_LABEL_KEYS)} for m in MODES}
    for k in ("auc", "ece_before", "ece_after"):
        mean[k] = float(np.mean([h[k] for h in halves]))
    mean["borderline_share"] = float(np.mean([h["borderline"]["share"] for h in halves]))
    mean["accuracy_outside_borderline"] = float(
        np.mean([h["borderline"]["accuracy_outside"] for h in halves]))
    pooled = _pooled(y, p_raw, p_cf, preds, border, n_bins)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in _flat(pooled)}
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if len(np.unique(y[i])) < 2:
            continue
        with np.errstate(invalid="ignore"):
            d = _flat(_pooled(y[i], p_raw[i], p_cf[i], {m: preds[m][i] for m in MODES},
                              border[i], n_bins))
        for k, v in d.items():
            draws[k].append(v)
    pooled["ci95"] = {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))]
                      for k, v in draws.items() if v}
    return {
        "fit": fit, "seed": int(seed), "n": int(len(y)), "n_bins": int(n_bins),
        "n_boot": int(n_boot),
        "halves": halves, "mean": mean, "pooled": pooled,
        "p_crossfit": p_cf, "split": {"a": a_idx, "b": b_idx},
    }


def choose_fit(y: np.ndarray, p_raw: np.ndarray, names: Sequence[str], *, seed: int = 0,
               n_bins: int = 10) -> tuple[str, dict[str, float]]:
    """'platt' or 'temperature', whichever has the lower cross-fitted ECE (mean of halves).

    Ties go to temperature (one parameter). Returns (fit, {fit: cross-fitted ECE}).
    """
    eces = {f: cross_fit(y, p_raw, names, fit=f, seed=seed, n_bins=n_bins, n_boot=0)
            ["mean"]["ece_after"] for f in FITS}
    best = "temperature" if eces["temperature"] <= eces["platt"] + 1e-12 else "platt"
    return best, eces


def calibrate_and_choose_thresholds(y: np.ndarray, p_raw: np.ndarray, names: Sequence[str], *,
                                    method: str = "auto", seed: int = 0, n_bins: int = 10,
                                    n_boot: int = 1000, fitted_on: str = EXTERNAL_LABEL
                                    ) -> dict:
    """The whole external-validation step on raw probabilities of one model.

    Chooses the fit (by cross-fitted ECE when `method` is 'auto'), measures it cross-fitted,
    then fits it on the whole set and chooses the shipped thresholds
    (train.metrics.external_operating_points) on the whole set's calibrated probabilities.
    Returns {'calibration', 'thresholds', 'cross_fit', 'full_set', 'p_calibrated'}.
    """
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; use one of {METHODS}")
    y, p_raw = np.asarray(y).astype(int), np.asarray(p_raw, dtype=np.float64)
    if method == "auto":
        fit, eces = choose_fit(y, p_raw, names, seed=seed, n_bins=n_bins)
        selection = {"rule": "lower cross-fitted ECE (mean of the two halves); ties go to "
                             "temperature", "cross_fitted_ece": eces, "chosen": fit}
    else:
        fit, selection = method, {"rule": "given", "chosen": method}
    cf = cross_fit(y, p_raw, names, fit=fit, seed=seed, n_bins=n_bins, n_boot=n_boot)
    cal = fit_calibration(y, p_raw, fit)
    p_cal = calibrated(p_raw, cal)
    thresholds = external_operating_points(y, p_cal)
    cal.update({
        "fitted_on": fitted_on,
        "ece_before": cf["mean"]["ece_before"],
        "ece_after": cf["mean"]["ece_after"],
        "ece_note": f"cross-fitted (mean of two patient-grouped halves), {n_bins} equal-width "
                    "bins",
        "ece_full_set_in_sample": {"before": expected_calibration_error(y, p_raw, n_bins),
                                   "after": expected_calibration_error(y, p_cal, n_bins)},
        "selection": selection,
    })
    full = {
        **{m: {"threshold": thresholds[m], **_label_metrics(y, p_cal >= thresholds[m])}
           for m in MODES},
        "auc": float(roc_auc_score(y, p_cal)) if len(np.unique(y)) == 2 else float("nan"),
        "borderline": borderline_stats(y, p_cal, thresholds),
        "note": "in-sample: thresholds and calibration chosen on these same images",
    }
    log.info("calibration %s (a %.3f, b %.3f): cross-fitted ECE %.4f -> %.4f; thresholds %s",
             fit, cal["a"], cal["b"], cal["ece_before"], cal["ece_after"], thresholds)
    return {"calibration": cal, "thresholds": thresholds, "cross_fit": cf, "full_set": full,
            "p_calibrated": p_cal}


def public_cross_fit(cf: dict) -> dict:
    """cross_fit's result without the arrays (JSON-ready)."""
    return {k: v for k, v in cf.items() if k not in ("p_crossfit", "split")}
