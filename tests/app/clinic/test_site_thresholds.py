"""The site-calibration math, the site profile file and the drift statistics (fast, numpy)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from pneumo.app.clinic import drift
from pneumo.app.clinic.site_profile import PROFILE_NAME, SiteProfile, accept
from pneumo.app.clinic.site_thresholds import (
    NEEDED_PNEUMONIAS,
    GuardRailBlocked,
    Proposals,
    TooFewCases,
    auc,
    binomial_tail,
    check_prevalence,
    clopper_pearson,
    cross_fitted_counts,
    guard,
    guard_halves,
    lower_bound,
    needed_pneumonias,
    per_100,
    propose,
    rates,
    roc_points,
    upper_bound,
)
from pneumo.app.pipeline.operating_points import operating_points


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
    assert moved["status"] == "drift" and "appearance has changed" in moved["message"]
    refused = drift.check(same[:40], [f"2026-01-02T00:00:{i:02d}Z" for i in range(30)], ref,
                          th, 0.4)
    assert refused["status"] == "drift" and refused["refused"] == 30
    border = drift.check(_answers(rng.normal(30, 5, 80), np.full(80, 0.3)), [], ref, th, 0.4)
    assert [c["name"] for c in border["checks"] if c["drift"]] == ["borderline"]


# --- the guard rail's statistic -------------------------------------------------------------

def test_lower_bound_known_values():
    """x = n: 0.05 ** (1 / n); 59 of 59 clear 0.95 and 149 of 149 clear 0.98, one fewer not."""
    for n in (1, 5, 30, 59, 149, 1000):
        assert lower_bound(n, n) == pytest.approx(0.05 ** (1 / n), rel=1e-12)
    assert lower_bound(59, 59) >= 0.95 > lower_bound(58, 58)
    assert lower_bound(149, 149) >= 0.98 > lower_bound(148, 148)
    assert lower_bound(0, 10) == 0.0
    assert (needed_pneumonias(0.95), needed_pneumonias(0.98)) == (59, 149)
    assert NEEDED_PNEUMONIAS == {"balanced": 59, "screening": 149}
    # the Why's case: 28 or 30 of 30 confirmed pneumonias are far from either rule
    assert lower_bound(30, 30) == pytest.approx(0.9050, abs=1e-4)
    with pytest.raises(ValueError):
        lower_bound(3, 2)


@pytest.mark.parametrize("x, n", [(1, 1), (1, 2), (5, 10), (28, 30), (29, 30), (57, 59),
                                  (145, 149), (190, 195), (566, 595), (3, 1000), (999, 1000)])
def test_clopper_pearson_matches_scipy(x, n):
    assert lower_bound(x, n) == pytest.approx(stats.beta.ppf(0.05, x, n - x + 1), abs=1e-10)
    up = stats.beta.ppf(0.95, x + 1, n - x) if x < n else 1.0
    assert upper_bound(x, n) == pytest.approx(up, abs=1e-10)
    lo, hi = clopper_pearson(x, n, 0.95)
    assert lo == pytest.approx(stats.beta.ppf(0.025, x, n - x + 1), abs=1e-10)
    assert hi == pytest.approx(stats.beta.ppf(0.975, x + 1, n - x) if x < n else 1.0, abs=1e-10)
    for k in (0, x // 2, x, n):
        assert binomial_tail(k, n, 0.9) == pytest.approx(stats.binom.sf(k - 1, n, 0.9),
                                                        rel=1e-9, abs=1e-300)


def test_cross_fitted_counts_judge_each_case_by_the_other_half():
    y, p = _scores(n=200, seed=3)
    counts = cross_fitted_counts(y, p, seed=0)
    assert counts == cross_fitted_counts(y, p, seed=0)  # deterministic by seed
    a, b = guard_halves(y, seed=0)
    assert sorted(np.r_[a, b].tolist()) == list(range(len(y)))  # a partition
    assert abs(int(y[a].sum()) - int(y[b].sum())) <= 1  # stratified
    for mode in ("balanced", "screening"):
        hits = tn = 0
        for fit, held in ((a, b), (b, a)):
            r = rates(y[held], p[held], operating_points(y[fit], p[fit])[mode])
            hits, tn = hits + r["tp"], tn + r["tn"]
        assert counts[mode] == {"hits": hits, "pneumonias": int(y.sum()), "true_negatives": tn,
                                "normals": int((y == 0).sum())}


def test_guard_verdicts():
    counts = {"balanced": {"hits": 30, "pneumonias": 30}, "screening": {"hits": 30,
                                                                       "pneumonias": 30}}
    g = guard({"balanced": 0.6, "screening": 0.58}, {"balanced": 0.6, "screening": 0.29}, counts)
    assert g["blocked"] and g["modes"]["balanced"]["verdict"] == "unchanged"
    s = g["modes"]["screening"]
    assert (s["direction"], s["verdict"], s["allowed"]) == ("raises", "raises_too_few", False)
    assert s["message"] == "raises: blocked, needs 149 confirmed pneumonias, has 30"
    low = guard({"balanced": 0.3, "screening": 0.1}, {"balanced": 0.6, "screening": 0.29}, counts)
    assert not low["blocked"] and low["modes"]["screening"]["message"] == "lowers: allowed"
    many = {"balanced": {"hits": 186, "pneumonias": 195}, "screening": {"hits": 200,
                                                                       "pneumonias": 200}}
    g = guard({"balanced": 0.7, "screening": 0.4}, {"balanced": 0.6, "screening": 0.29}, many)
    b, s = g["modes"]["balanced"], g["modes"]["screening"]
    assert b["verdict"] == "raises_below_rule" and b["missed"] == 9
    assert b["message"] == f"raises: blocked, lower bound {b['lower_bound']:.3f} below rule 0.95"
    assert s["verdict"] == "raises_passes" and s["message"].startswith("raises: passes")
    assert s["lower_bound"] == pytest.approx(0.05 ** (1 / 200), abs=1e-4)


def test_per_100_formula_and_intervals():
    r = per_100(hits=28, pneumonias=30, true_negatives=27, normals=30, prevalence=0.2)
    sens, spec = 28 / 30, 27 / 30
    assert r["referrals"] == pytest.approx(100 * (0.2 * sens + 0.8 * (1 - spec)), abs=0.01)
    assert r["missed"] == pytest.approx(100 * 0.2 * (1 - sens), abs=0.01)
    lo, hi = clopper_pearson(28, 30, 0.95)
    assert r["missed_ci"] == pytest.approx([20 * (1 - hi), 20 * (1 - lo)], abs=0.01)
    s_lo, s_hi = clopper_pearson(28, 30, 0.975)
    c_lo, c_hi = clopper_pearson(27, 30, 0.975)
    assert r["referrals_ci"] == pytest.approx([100 * (0.2 * s_lo + 0.8 * (1 - c_hi)),
                                               100 * (0.2 * s_hi + 0.8 * (1 - c_lo))], abs=0.01)
    assert r["referrals_ci"][0] <= r["referrals"] <= r["referrals_ci"][1]
    assert r["missed_ci"][0] <= r["missed"] <= r["missed_ci"][1]


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, "0.3", True, [0.3]])
def test_bad_prevalence(value):
    with pytest.raises(ValueError):
        check_prevalence(value)


def _raising_cases(n_pos: int, n_neg: int = 40):
    """Confirmed cases whose proposal raises the thresholds (pneumonias score high)."""
    rng = np.random.default_rng(5)
    y = np.r_[np.zeros(n_neg, int), np.ones(n_pos, int)]
    p = np.r_[rng.uniform(0.02, 0.5, n_neg), rng.uniform(0.6, 0.99, n_pos)]
    return y, p


MODEL = {"balanced": 0.58, "screening": 0.29}


def test_proposal_of_30_and_30_that_raises_is_blocked():
    y, p = _raising_cases(30, 30)
    prop = propose(y, p, MODEL)
    assert all(prop["thresholds"][m] > MODEL[m] for m in MODEL)
    g = prop["guard"]
    assert g["blocked"]
    assert {m: v["verdict"] for m, v in g["modes"].items()} == {
        "balanced": "raises_too_few", "screening": "raises_too_few"}
    assert g["modes"]["screening"]["needed"] == 149 and g["modes"]["balanced"]["needed"] == 59
    assert g["modes"]["screening"]["pneumonias"] == 30
    # the per-100 figures: default share = the confirmed share; entered share recomputes
    assert prop["prevalence"] == {**prop["prevalence"], "entered": None, "used": 0.5,
                                  "confirmed_share": 0.5}
    assert "chose to confirm" in prop["prevalence"]["note"]
    assert prop["per_100"]["prevalence"] == 0.5
    other = propose(y, p, MODEL, prevalence=0.1)
    assert other["thresholds"] == prop["thresholds"] and other["guard"] == prop["guard"]
    row = other["per_100"]["modes"]["screening"]["proposed"]
    assert row["missed"] == pytest.approx(10 * (1 - row["sensitivity"]), abs=0.01)
    assert other["prevalence"]["entered"] == 0.1 and "Clopper-Pearson" in other["per_100"]["method"]


def test_tied_pneumonias_let_a_raise_pass():
    """An honest pass: 160 pneumonias all at the model's top score (a saturating model), so no
    halving can miss one: 160 of 160, lower bound 0.05 ** (1 / 160) = 0.981 >= 0.98."""
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(60, int), np.ones(160, int)]
    p = np.r_[rng.uniform(0.02, 0.6, 60), np.full(160, 0.97)]
    prop = propose(y, p, MODEL)
    assert prop["thresholds"] == {"balanced": 0.97, "screening": 0.97}
    assert not prop["guard"]["blocked"]
    assert {m: v["verdict"] for m, v in prop["guard"]["modes"].items()} == {
        "balanced": "raises_passes", "screening": "raises_passes"}


def test_lowering_proposal_is_always_allowed_even_with_few_cases():
    rng = np.random.default_rng(2)
    y = np.r_[np.zeros(25, int), np.ones(25, int)]
    p = np.r_[rng.uniform(0.0, 0.05, 25), rng.uniform(0.1, 0.9, 25)]
    prop = propose(y, p, MODEL)
    assert all(prop["thresholds"][m] < MODEL[m] for m in MODEL)
    assert not prop["guard"]["blocked"]
    assert {v["message"] for v in prop["guard"]["modes"].values()} == {"lowers: allowed"}


def test_accept_needs_an_override_for_a_blocked_proposal(tmp_path):
    from pneumo.app.history.store import HistoryStore

    y, p = _raising_cases(30, 30)
    prop = {**propose(y, p, MODEL, prevalence=0.2), "id": "p1"}
    site, history = SiteProfile(tmp_path), HistoryStore(tmp_path / "h.sqlite3")
    old = {"source": "model", "thresholds": MODEL}
    try:
        with pytest.raises(GuardRailBlocked) as exc:
            accept(site, history, prop, model_sha256="abc", model_version="v", by="AB", old=old)
        assert set(exc.value.blocked) == {"balanced", "screening"}
        assert site.profile is None and history.audit() == []
        with pytest.raises(ValueError):
            accept(site, history, prop, model_sha256="abc", model_version="v", by=None, old=old,
                   override={"reason": " ", "by": "AB"})
        profile = accept(site, history, prop, model_sha256="abc", model_version="v", by=None,
                         old=old, override={"reason": "Radiologist reviewed all 30", "by": "AB"})
        assert profile["by"] == "AB" and profile["override"]["needed"] is True
        assert profile["override"]["blocked_modes"] == ["balanced", "screening"]
        assert site.prevalence_for("abc") == 0.2 and site.prevalence_for("other") is None
        (row,) = history.audit()
        assert row["action"] == "calibration_accepted" and row["by"] == "AB"
        assert row["new"]["override"]["reason"] == "Radiologist reviewed all 30"
        assert row["new"]["guard"]["modes"]["screening"]["verdict"] == "raises_too_few"
        assert row["new"]["guard"]["modes"]["screening"]["pneumonias"] == 30
        # judged again against the thresholds in use: now the site's, which it does not raise
        again = accept(site, history, prop, model_sha256="abc", model_version="v", by="AB",
                       old={"source": "site", "thresholds": prop["thresholds"]})
        assert again["override"] is None and not again["guard"]["blocked"]
    finally:
        history.close()
