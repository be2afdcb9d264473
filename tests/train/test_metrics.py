"""Operating thresholds and metrics."""

import numpy as np
import pytest

from train.metrics import bootstrap_ci, choose_thresholds, metrics_at


def test_thresholds_on_separable_and_noisy_scores():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(300), np.ones(700)].astype(int)
    p = np.clip(np.r_[rng.normal(0.3, 0.15, 300), rng.normal(0.75, 0.15, 700)], 0, 1)
    t = choose_thresholds(y, p)
    assert 0.35 < t["balanced"] < 0.65
    screen = metrics_at(y, p, t["screening"])
    assert screen["sensitivity"] >= 0.95
    # no other threshold with sensitivity >= 0.95 has a higher specificity
    for cand in np.unique(p):
        m = metrics_at(y, p, cand)
        if m["sensitivity"] >= 0.95:
            assert m["specificity"] <= screen["specificity"] + 1e-12


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
