"""The site-calibration math, the site profile file and the drift statistics (fast, numpy)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from edge_app import drift
from edge_app.operating_points import operating_points
from edge_app.site_calibration import Proposals, TooFewCases, auc, propose, rates, roc_points
from edge_app.site_profile import PROFILE_NAME, SiteProfile


def _scores(n: int = 120, seed: int = 0, ties: bool = True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.35 + 0.35 * y, 0.18), 0, 1)
    return y, (np.round(p, 2) if ties else p)  # rounded: many ties, like an int8 model


def test_auc_matches_sklearn_with_ties():
    for seed in range(5):
        y, p = _scores(seed=seed)
        assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert np.isnan(auc(np.ones(5), np.linspace(0, 1, 5)))


def test_proposal_thresholds_follow_the_model_rule_exactly():
    y, p = _scores()
    prop = propose(y, p, {"balanced": 0.5, "screening": 0.3})
    assert prop["thresholds"] == operating_points(y, p)
    for mode, floor in (("balanced", 0.95), ("screening", 0.98)):
        t = prop["thresholds"][mode]
        assert t in set(p.tolist())  # one of the scores, not a rounded neighbour
        r = rates(y, p, t)
        assert r["sensitivity"] >= floor
        assert prop["metrics"]["proposed"][mode]["sensitivity"] == r["sensitivity"]
        lo, hi = prop["metrics"]["proposed"][mode]["specificity_ci"]
        assert lo <= r["specificity"] <= hi
    cur = prop["metrics"]["current"]["balanced"]
    assert cur["threshold"] == 0.5 and cur["tp"] + cur["fn"] == int(y.sum())
    assert set(prop["metrics"]["proposed_cross_fitted"]) == {"balanced", "screening"}
    assert prop["n"] == {"normal": int((y == 0).sum()), "pneumonia": int(y.sum())}


def test_proposal_is_seeded():
    y, p = _scores()
    a, b = propose(y, p, {"balanced": 0.5}), propose(y, p, {"balanced": 0.5})
    assert a == b


def test_too_few_cases():
    y = np.array([0] * 24 + [1] * 40)
    with pytest.raises(TooFewCases) as exc:
        propose(y, np.linspace(0, 1, len(y)), {"balanced": 0.5})
    assert (exc.value.n_normal, exc.value.n_pneumonia, exc.value.minimum) == (24, 40, 25)
    assert "at least 25" in str(exc.value)


def test_roc_points_run_from_corner_to_corner():
    y, p = _scores()
    roc = roc_points(y, p)
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0, 0, 1, 1)
    assert all(np.diff(roc["fpr"]) >= 0) and all(np.diff(roc["tpr"]) >= 0)


def test_proposals_keep_the_newest():
    keep = Proposals(keep=3)
    ids = [keep.add({"k": i})["id"] for i in range(5)]
    assert keep.get(ids[0]) is None and keep.get(ids[-1])["k"] == 4


def test_site_profile_saved_reloaded_and_model_bound(tmp_path):
    site = SiteProfile(tmp_path)
    assert site.profile is None and site.thresholds_for("abc", ["balanced"]) is None
    site.save({"thresholds": {"balanced": 0.4, "screening": 0.2}, "model_sha256": "abc"})
    assert oct((tmp_path / PROFILE_NAME).stat().st_mode & 0o777) == "0o600"
    assert SiteProfile(tmp_path).thresholds_for("abc", ["balanced", "screening"]) == {
        "balanced": 0.4, "screening": 0.2}
    assert site.thresholds_for("other", ["balanced"]) is None  # another model: not used
    assert site.thresholds_for("abc", ["balanced", "extra"]) is None  # a mode it lacks
    # Another process (pneumo calibrate --accept) writes the file: picked up without restart.
    (tmp_path / PROFILE_NAME).write_text(json.dumps(
        {"thresholds": {"balanced": 0.6}, "model_sha256": "abc"}), encoding="utf-8")
    os.utime(tmp_path / PROFILE_NAME, ns=(1, 1))
    assert site.thresholds_for("abc", ["balanced"]) == {"balanced": 0.6}
    assert site.clear()["thresholds"] == {"balanced": 0.6}
    assert site.profile is None and not (tmp_path / PROFILE_NAME).exists()


@pytest.mark.parametrize("text", ["{not json", '{"thresholds": {"balanced": 7}}', "[]"])
def test_damaged_profile_is_ignored_not_deleted(tmp_path, text, caplog):
    (tmp_path / PROFILE_NAME).write_text(text, encoding="utf-8")
    assert SiteProfile(tmp_path).profile is None
    assert (tmp_path / PROFILE_NAME).read_text(encoding="utf-8") == text
    assert "cannot be read" in caplog.text


def test_ks_and_binomial_match_scipy():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 400)
    q = np.quantile(ref, np.linspace(0, 1, 101))
    for shift in (0.0, 0.3, 1.0):
        x = rng.normal(shift, 1, 100)
        d = drift.ks_against_quantiles(x, q)
        assert d == pytest.approx(stats.ks_2samp(x, ref).statistic, abs=0.03)
        assert drift.ks_pvalue(d, 100, 400) == pytest.approx(
            stats.kstwo.sf(d, round(100 * 400 / 500)), rel=0.35, abs=1e-4)
    for k, n, r in ((0, 100, 0.01), (3, 100, 0.01), (10, 100, 0.02), (40, 60, 0.5)):
        assert drift.binomial_upper(k, n, r) == pytest.approx(stats.binom.sf(k - 1, n, r),
                                                              rel=1e-9)


def _answers(ood, probs):
    return [{"created_at": f"2026-01-01T00:00:{i:02d}.000Z", "ood_distance": o,
             "probability": p} for i, (o, p) in enumerate(zip(ood, probs, strict=True))][::-1]


def test_drift_check_statuses():
    rng = np.random.default_rng(1)
    q = list(np.quantile(rng.normal(30, 5, 300), np.linspace(0, 1, 101)))
    ref = {"n": 300, "refusal_rate": 0.0, "borderline_rate": 0.04,
           "ood_quantiles_by_label": {"NORMAL": q, "PNEUMONIA": q},
           "n_by_label": {"NORMAL": 150, "PNEUMONIA": 150}}
    th = {"balanced": 0.4, "screening": 0.2}
    probs = np.r_[np.full(40, 0.05), np.full(40, 0.9)]
    same = _answers(rng.normal(30, 5, 80), probs)
    assert drift.check(same, [], None, th, 0.4)["status"] == "unavailable"
    assert drift.check(same[:30], [], ref, th, 0.4)["status"] == "insufficient"
    ok = drift.check(same, [], ref, th, 0.4)
    assert ok["status"] == "ok" and ok["n"] == 80
    moved = drift.check(_answers(rng.normal(45, 5, 80), probs), [], ref, th, 0.4)
    assert moved["status"] == "drift" and "look different" in moved["message"]
    refused = drift.check(same[:40], [f"2026-01-02T00:00:{i:02d}Z" for i in range(30)], ref,
                          th, 0.4)
    assert refused["status"] == "drift" and refused["refused"] == 30
    border = drift.check(_answers(rng.normal(30, 5, 80), np.full(80, 0.3)), [], ref, th, 0.4)
    assert [c["name"] for c in border["checks"] if c["drift"]] == ["borderline"]
