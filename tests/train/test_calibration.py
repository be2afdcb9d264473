"""Calibration fits, ECE, patient-grouped halves and cross-fitted operating points."""

import numpy as np
import pytest

from pneumo.app.pipeline.calibration import apply_calibration, calibration_params, sigmoid
from pneumo.train.calibration import (
    calibrate_and_choose_thresholds,
    calibrated,
    cross_fit,
    expected_calibration_error,
    fit_platt,
    fit_temperature,
    reliability_bins,
    split_halves,
)
from pneumo.train.data import patient_id
from pneumo.train.metrics import metrics_at


def _synthetic(n: int, a: float, b: float, seed: int = 0):
    """Raw scores whose true P(y=1) is sigmoid(a * logit(p_raw) + b)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < sigmoid(a * z + b)).astype(int)
    return y, sigmoid(z)


def _names(y: np.ndarray, per_patient: int = 3) -> list[str]:
    """Kaggle-style file names, several images per patient, one class per patient."""
    names = []
    for i, label in enumerate(y):
        pid = 1000 + i // per_patient
        names.append(f"person{pid}_bacteria_{i}.jpeg" if label else f"IM-{pid:04d}-{i:04d}.jpeg")
    return names


def test_platt_recovers_known_parameters():
    y, p = _synthetic(40_000, a=0.5, b=-1.0)
    cal = fit_platt(y, p)
    assert cal["method"] == "platt"
    assert cal["a"] == pytest.approx(0.5, abs=0.03)
    assert cal["b"] == pytest.approx(-1.0, abs=0.05)
    assert calibration_params(cal) == (cal["a"], cal["b"])  # the app accepts it


def test_temperature_recovers_known_slope():
    y, p = _synthetic(40_000, a=0.4, b=0.0, seed=1)
    cal = fit_temperature(y, p)
    assert cal["b"] == 0.0 and cal["fit"] == "temperature"
    assert cal["a"] == pytest.approx(0.4, abs=0.03)
    assert cal["temperature"] == pytest.approx(1 / cal["a"])


def test_calibrated_map_is_monotonic_even_for_anticorrelated_scores():
    y, p = _synthetic(2_000, a=-1.0, b=0.0, seed=2)  # scores point the wrong way
    for cal in (fit_platt(y, p), fit_temperature(y, p)):
        assert cal["a"] > 0
        grid = np.linspace(0.001, 0.999, 500)
        assert np.all(np.diff(apply_calibration(grid, cal)) > 0)
    y, p = _synthetic(2_000, a=2.0, b=0.5, seed=3)
    grid = np.linspace(0.001, 0.999, 500)
    assert np.all(np.diff(apply_calibration(grid, fit_platt(y, p))) > 0)


def test_ece_and_reliability_bins_by_hand():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.05, 0.15, 0.55, 0.65, 1.0])
    # bins: [0,.1): y 0 p .05 -> .05; [.1,.2): 1 vs .15 -> .85; [.5,.6): 1 vs .55 -> .45;
    # [.6,.7): 0 vs .65 -> .65; [.9,1]: 1 vs 1.0 -> 0; each weighted 1/5
    assert expected_calibration_error(y, p) == pytest.approx((0.05 + 0.85 + 0.45 + 0.65) / 5)
    b = reliability_bins(y, p)
    assert sum(b["count"]) == 5 and len(b["edges"]) == 11
    assert b["count"][9] == 1 and b["fraction_positive"][9] == 1.0
    assert b["mean_predicted"][3] is None


def test_ece_drops_after_calibrating_an_overconfident_model():
    y, p = _synthetic(4_000, a=0.35, b=0.8, seed=4)  # raw scores far too confident
    names = _names(y)
    before = expected_calibration_error(y, p)
    cf = cross_fit(y, p, names, fit="platt", seed=0, n_boot=0)
    assert before > 0.1
    assert cf["mean"]["ece_before"] == pytest.approx(
        np.mean([h["ece_before"] for h in cf["halves"]]))
    assert cf["mean"]["ece_after"] < 0.03 < before
    assert cf["pooled"]["ece_after"] < 0.03


def test_halves_are_grouped_by_patient_and_stratified():
    rng = np.random.default_rng(5)
    y = np.r_[np.zeros(60, int), np.ones(90, int)]
    names = _names(y, per_patient=3)
    order = rng.permutation(len(y))
    y, names = y[order], [names[i] for i in order]
    a, b = split_halves(names, y, seed=0)
    assert sorted(np.r_[a, b].tolist()) == list(range(len(y)))
    pa, pb = {patient_id(names[i]) for i in a}, {patient_id(names[i]) for i in b}
    assert not pa & pb
    for label in (0, 1):
        na, nb = (y[a] == label).sum(), (y[b] == label).sum()
        assert abs(na - nb) <= 3  # within one patient's images
    a2, _ = split_halves(names, y, seed=0)
    a3, _ = split_halves(names, y, seed=1)
    assert np.array_equal(a, a2) and not np.array_equal(a, a3)


def test_cross_fit_fits_on_one_half_and_measures_on_the_other():
    y, p = _synthetic(600, a=0.6, b=0.3, seed=6)
    names = _names(y)
    cf = cross_fit(y, p, names, fit="platt", seed=3, n_boot=100)
    a, b = cf["split"]["a"], cf["split"]["b"]
    assert len(cf["halves"]) == 2 and cf["halves"][0]["n_eval"] == len(b)
    # each half's thresholds meet the sensitivity rules on the half they were fitted on
    for h, fit_idx in zip(cf["halves"], (a, b), strict=True):
        p_fit = calibrated(p[fit_idx], h["calibration"])
        assert metrics_at(y[fit_idx], p_fit, h["thresholds"]["balanced"])["sensitivity"] >= 0.95
        assert metrics_at(y[fit_idx], p_fit, h["thresholds"]["screening"])["sensitivity"] >= 0.98
        assert h["thresholds"]["screening"] <= h["thresholds"]["balanced"]
    m = cf["mean"]
    assert m["balanced"]["sensitivity"] == pytest.approx(
        np.mean([h["balanced"]["sensitivity"] for h in cf["halves"]]))
    lo, hi = cf["pooled"]["ci95"]["balanced.sensitivity"]
    assert lo <= cf["pooled"]["balanced"]["sensitivity"] <= hi
    assert 0 <= m["borderline_share"] <= 1


def test_full_external_step_chooses_by_measurement_and_ships_full_set_thresholds():
    y, p = _synthetic(800, a=0.4, b=-0.6, seed=7)
    res = calibrate_and_choose_thresholds(y, p, _names(y), n_boot=50)
    cal, sel = res["calibration"], res["calibration"]["selection"]
    eces = sel["cross_fitted_ece"]
    assert sel["chosen"] == min(eces, key=eces.get)
    assert cal["fit"] == sel["chosen"] and cal["a"] > 0
    assert cal["fitted_on"] == "external validation (half of the official test split)"
    assert cal["ece_after"] == pytest.approx(eces[sel["chosen"]])
    p_cal = calibrated(p, cal)  # float32, as the app computes it
    assert np.array_equal(p_cal, apply_calibration(p, cal).astype(np.float32))
    t = res["thresholds"]
    assert metrics_at(y, p_cal, t["balanced"])["sensitivity"] >= 0.95
    assert metrics_at(y, p_cal, t["screening"])["sensitivity"] >= 0.98
    assert res["full_set"]["borderline"]["share"] == pytest.approx(
        np.mean((p_cal >= t["screening"]) & (p_cal < t["balanced"])))
    with pytest.raises(ValueError, match="unknown calibration"):
        calibrate_and_choose_thresholds(y, p, _names(y), method="isotonic")
