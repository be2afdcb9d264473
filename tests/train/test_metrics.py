"""Operating thresholds and metrics."""

import numpy as np
import pytest

from pneumo.train.metrics import bootstrap_ci, choose_thresholds, metrics_at, threshold_details


def test_thresholds_on_separable_and_noisy_scores():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(300), np.ones(700)].astype(int)
    p = np.clip(np.r_[rng.normal(0.3, 0.15, 300), rng.normal(0.75, 0.15, 700)], 0, 1)
    t = choose_thresholds(y, p)
    assert 0.35 < t["balanced"] < 0.65
    screen = metrics_at(y, p, t["screening"])
    assert screen["sensitivity"] >= 0.98  # the app's documented screening rule
    # on overlapping classes the 0.98-sensitivity rule binds: no other threshold with
    # sensitivity >= 0.98 has a higher specificity
    for cand in np.unique(p):
        m = metrics_at(y, p, cand)
        if m["sensitivity"] >= 0.98:
            assert m["specificity"] <= screen["specificity"] + 1e-12


def test_nearly_separable_validation_keeps_the_modes_meaningful():
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(270), np.ones(770)].astype(int)
    p = np.r_[rng.beta(1, 60, 262), rng.uniform(0.2, 0.9, 8),
              rng.beta(60, 1, 750), rng.uniform(0.05, 0.8, 20)]
    d = threshold_details(y, p)
    # J is flat: balanced takes the highest threshold within one SE of the maximum ...
    assert d["balanced"] >= d["youden_max_threshold"]
    j = lambda t: metrics_at(y, p, t)["sensitivity"] + metrics_at(y, p, t)["specificity"] - 1  # noqa: E731
    assert j(d["balanced"]) >= d["youden_max"] - d["youden_se"] - 1e-12
    # ... and screening is never less sensitive than balanced or the J optimum
    assert d["screening"] <= min(d["balanced"], d["youden_max_threshold"])
    sens = lambda t: metrics_at(y, p, t)["sensitivity"]  # noqa: E731
    assert sens(d["screening"]) >= max(0.98, sens(d["balanced"]))
    assert choose_thresholds(y, p) == {"balanced": d["balanced"], "screening": d["screening"]}


def test_metrics_match_hand_counts():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.7, 0.9])
    m = metrics_at(y, p, 0.5)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (1, 1, 1, 2)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.6)


def test_bootstrap_ci_contains_point_estimate():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.4 + rng.random(200) * 0.6, 0, 1)
    ci = bootstrap_ci(y, p, 0.5, n_boot=200)
    m = metrics_at(y, p, 0.5)
    for k in ("accuracy", "auc", "sensitivity"):
        assert ci[k][0] <= m[k] <= ci[k][1]


def test_threshold_for_sensitivity_meets_constraint_with_max_specificity():
    from pneumo.train.metrics import external_operating_points, threshold_for_sensitivity

    rng = np.random.default_rng(4)
    y = np.r_[np.zeros(120), np.ones(200)].astype(int)
    p = np.round(np.clip(np.r_[rng.normal(0.4, 0.2, 120), rng.normal(0.7, 0.2, 200)], 0, 1), 2)
    for min_sens in (0.9, 0.95, 0.98, 1.0):
        t = threshold_for_sensitivity(y, p, min_sens)
        m = metrics_at(y, p, t)
        assert m["sensitivity"] >= min_sens
        feasible = [c for c in np.unique(p) if metrics_at(y, p, c)["sensitivity"] >= min_sens]
        best = max(metrics_at(y, p, c)["specificity"] for c in feasible)
        assert m["specificity"] == best
        assert t == max(c for c in feasible if metrics_at(y, p, c)["specificity"] == best)
    ops = external_operating_points(y, p)
    assert ops["screening"] <= ops["balanced"]
    assert ops["balanced"] == threshold_for_sensitivity(y, p, 0.95)
    assert ops["screening"] == threshold_for_sensitivity(y, p, 0.98)


def test_threshold_for_sensitivity_by_hand_and_ties():
    from pneumo.train.metrics import threshold_for_sensitivity

    y = np.array([0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.3, 0.6, 0.2, 0.5, 0.7, 0.9])
    assert threshold_for_sensitivity(y, p, 0.75) == 0.5  # 3/4 positives, spec 2/3
    assert threshold_for_sensitivity(y, p, 1.0) == 0.2  # all positives, spec 1/3
    # separable: every threshold in (0.3, 0.5] has spec 1 and sens 1; the highest is taken
    assert threshold_for_sensitivity([0, 0, 1, 1], [0.1, 0.3, 0.5, 0.8], 0.95) == 0.5
    with pytest.raises(ValueError):
        threshold_for_sensitivity([0, 0], [0.1, 0.2], 0.95)


def test_numpy_metrics_match_sklearn_with_ties():
    """metrics_at, auc_rows and specificity_at_sensitivity agree with scikit-learn exactly."""
    from sklearn import metrics as sk

    from pneumo.train.metrics import auc_rows, specificity_at_sensitivity

    rng = np.random.default_rng(0)
    y = np.sort(rng.integers(0, 2, 60))
    rows = np.round(rng.random((5, 60)), 1) + 0.2 * y  # many ties
    np.testing.assert_allclose(auc_rows(y, rows), [sk.roc_auc_score(y, r) for r in rows])
    for p in rows:
        t = float(np.median(p))
        m, pred = metrics_at(y, p, t), (p >= t).astype(int)
        assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
        assert m["sensitivity"] == pytest.approx(sk.recall_score(y, pred))
        assert m["precision"] == pytest.approx(sk.precision_score(y, pred))
        assert m["f1"] == pytest.approx(sk.f1_score(y, pred))
        assert m["auc"] == pytest.approx(sk.roc_auc_score(y, p))
        fpr, tpr, _ = sk.roc_curve(y, p, drop_intermediate=False)
        for s in (0.5, 0.95, 1.0):
            assert specificity_at_sensitivity(y, p, s) == pytest.approx(1 - fpr[tpr >= s].min())
    assert np.isnan(metrics_at(np.ones(5), np.linspace(0, 1, 5), 0.5)["auc"])


def test_a_rate_with_no_case_of_its_class_is_undefined_not_zero():
    y = np.zeros(5, dtype=int)  # no pneumonia at all
    p = np.linspace(0.1, 0.3, 5)
    m = metrics_at(y, p, 0.5)  # and no positive call
    assert np.isnan(m["sensitivity"]) and np.isnan(m["precision"]) and np.isnan(m["f1"])
    assert m["specificity"] == 1.0 and m["accuracy"] == 1.0
    from pneumo.train.metrics import figure, figure_with_ci

    assert figure(m["sensitivity"]) == "-" and figure(m["specificity"]) == "1.000"
    m["ci95"] = {"sensitivity": [float("nan"), float("nan")]}
    assert figure_with_ci(m, "sensitivity") == "-"
    m["ci95"]["specificity"] = [0.5, 1.0]
    assert figure_with_ci(m, "specificity") == "1.000 (0.500-1.000)"
