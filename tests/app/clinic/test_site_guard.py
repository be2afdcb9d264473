"""The guard rail on a clinic's thresholds, end to end through the API and `pneumo calibrate`.

Fast tests confirm cases made straight in the history (chosen scores: what each branch of the
guard needs); the slow ones score real X-rays through the app's pipeline and the bundled model:
external validation images (half of the official test split, `../shared/data/external_val`)
and training images (only scored here, never trained on).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from tinydata import SHARED_DATA

from pneumo.app.clinic.site_profile import SiteProfile
from pneumo.app.history.schema import new_id, utc_now_iso
from pneumo.app.web.app import create_app
from pneumo.app.web.state import get_state

EXTERNAL_VAL = SHARED_DATA.parent / "external_val"
TRAIN = SHARED_DATA / "train"


@pytest.fixture
def guard_app(app_config):
    app = create_app(app_config)
    yield app
    get_state(app).history.close()


def _confirm_scores(app, normal: list[float], pneumonia: list[float]) -> None:
    """Confirmed results with these probabilities, as if analysed by the loaded model."""
    st = get_state(app)
    for finding, probs in (("normal", normal), ("pneumonia", pneumonia)):
        for p in probs:
            rec = st.history.add({
                "id": new_id(), "created_at": utc_now_iso(), "sha256": new_id() * 2,
                "label": "PNEUMONIA" if p >= 0.5 else "NORMAL", "probability": float(p),
                "threshold": 0.5, "mode": "balanced", "model_version": st.model.version,
                "model_sha256": st.model.sha256})
            st.history.set_finding(rec["id"], finding, by="RN")


def _propose(client, **body) -> dict:
    r = client.post("/api/v1/calibration/proposal", json=body)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def _raise_scores(n_normal: int, n_pneumonia: int, seed: int = 0):
    """Pneumonias score high, normals low: the rule moves both thresholds up."""
    rng = np.random.default_rng(seed)
    return (list(rng.uniform(0.02, 0.5, n_normal)), list(rng.uniform(0.65, 0.99, n_pneumonia)))


def _accepted_rows(client) -> list[dict]:
    return [a for a in client.get("/api/v1/audit").get_json()["items"]
            if a["action"] == "calibration_accepted"]


@pytest.mark.parametrize("override, field", [
    ({"reason": "", "by": "AB"}, "reason"),
    ({"reason": "   ", "by": "AB"}, "reason"),
    ({"reason": "checked", "by": ""}, "by"),
    ({"reason": "checked"}, "by"),
    ({"reason": "x" * 501, "by": "AB"}, "reason"),
    ({"reason": "checked", "by": "A" * 65}, "by"),
    ({"reason": 3, "by": "AB"}, "reason"),
    ("checked by AB", "reason"),
])
def test_incomplete_override_is_refused(guard_app, override, field):
    client = guard_app.test_client()
    _confirm_scores(guard_app, *_raise_scores(30, 30))
    prop = _propose(client)
    r = client.post("/api/v1/calibration", json={"proposal_id": prop["id"], "override": override})
    err = r.get_json()["error"]
    assert (r.status_code, err["code"], err["field"]) == (400, "bad_override", field)
    assert client.get("/api/v1/calibration").get_json()["source"] == "model"
    assert _accepted_rows(client) == []


def test_raise_without_enough_pneumonias_needs_an_override_recorded_in_the_audit(guard_app):
    client = guard_app.test_client()
    model = get_state(guard_app).model.thresholds
    _confirm_scores(guard_app, *_raise_scores(30, 30))
    state = client.get("/api/v1/calibration").get_json()
    assert state["needed_pneumonias"] == {"balanced": 59, "screening": 149}
    assert state["confirmed_cases"] == {"normal": 30, "pneumonia": 30}
    prop = _propose(client)
    assert all(prop["thresholds"][m] > model[m] for m in model)
    g = prop["guard"]
    assert g["blocked"] and {m: v["verdict"] for m, v in g["modes"].items()} == {
        "balanced": "raises_too_few", "screening": "raises_too_few"}
    assert g["modes"]["screening"]["message"] == ("raises: blocked, needs 149 confirmed "
                                                  "pneumonias, has 30")
    # one click is refused, plainly, and nothing changes
    r = client.post("/api/v1/calibration", json={"proposal_id": prop["id"], "by": "Lead"})
    err = r.get_json()["error"]
    assert (r.status_code, err["code"]) == (409, "guard_rail")
    assert "override" in err["message"] and set(err["blocked"]) == {"balanced", "screening"}
    assert client.get("/api/v1/calibration").get_json()["source"] == "model"
    assert _accepted_rows(client) == []
    # with an override (reason and initials) it is used, and the audit trail says so
    r = client.post("/api/v1/calibration", json={
        "proposal_id": prop["id"], "by": "Lead",
        "override": {"reason": "Radiologist re-read all 60 films", "by": "JM"}})
    assert r.status_code == 200, r.get_json()
    state = r.get_json()
    assert state["source"] == "site" and state["thresholds"] == prop["thresholds"]
    assert state["profile"]["override"]["reason"] == "Radiologist re-read all 60 films"
    assert state["created_at"] == state["profile"]["created_at"]
    (row,) = _accepted_rows(client)
    assert row["by"] == "Lead" and row["old"]["source"] == "model"
    assert row["new"]["override"] == {"reason": "Radiologist re-read all 60 films", "by": "JM",
                                      "needed": True, "blocked_modes": ["balanced", "screening"]}
    figures = row["new"]["guard"]["modes"]["screening"]
    assert (figures["verdict"], figures["pneumonias"], figures["needed"]) == (
        "raises_too_few", 30, 149)
    assert figures["proposed_threshold"] == prop["thresholds"]["screening"]


def test_lowering_proposal_is_accepted_with_one_click(guard_app):
    client = guard_app.test_client()
    rng = np.random.default_rng(1)
    _confirm_scores(guard_app, list(rng.uniform(0.0, 0.05, 25)), list(rng.uniform(0.1, 0.95, 25)))
    prop = _propose(client)
    assert not prop["guard"]["blocked"]
    assert {v["verdict"] for v in prop["guard"]["modes"].values()} == {"lowers"}
    r = client.post("/api/v1/calibration", json={"proposal_id": prop["id"], "by": "Lead"})
    assert r.status_code == 200 and r.get_json()["source"] == "site"
    (row,) = _accepted_rows(client)
    assert row["new"]["override"] is None and row["new"]["guard"]["blocked"] is False


def test_raise_with_enough_pneumonias_none_missed_passes(guard_app):
    """An honest pass: 160 confirmed pneumonias at the model's top score (tied, as a
    saturating model gives them), so none is missed by the thresholds of the other half:
    160 of 160, exact lower bound 0.05 ** (1 / 160) = 0.981, above both rules."""
    client = guard_app.test_client()
    rng = np.random.default_rng(2)
    _confirm_scores(guard_app, list(rng.uniform(0.02, 0.55, 60)), [0.97] * 160)
    prop = _propose(client)
    g = prop["guard"]
    assert not g["blocked"]
    for mode in ("balanced", "screening"):
        v = g["modes"][mode]
        assert (v["direction"], v["verdict"], v["hits"], v["pneumonias"]) == (
            "raises", "raises_passes", 160, 160)
        assert v["lower_bound"] >= v["rule"]
    r = client.post("/api/v1/calibration", json={"proposal_id": prop["id"], "by": "Lead"})
    assert r.status_code == 200 and r.get_json()["thresholds"] == prop["thresholds"]


def test_prevalence_recomputes_the_figures_and_is_kept(guard_app, tmp_path):
    client = guard_app.test_client()
    _confirm_scores(guard_app, *_raise_scores(30, 30))
    default = _propose(client)
    assert default["prevalence"]["entered"] is None and default["per_100"]["prevalence"] == 0.5
    assert "chose to confirm" in default["prevalence"]["note"]
    for bad in (0, 1, -0.2, 2, "0.1", True, [0.1]):
        r = client.post("/api/v1/calibration/proposal", json={"prevalence": bad})
        assert (r.status_code, r.get_json()["error"]["code"]) == (400, "bad_prevalence"), bad
    prop = _propose(client, prevalence=0.12)
    assert prop["thresholds"] == default["thresholds"]
    assert prop["prevalence"] == {**prop["prevalence"], "entered": 0.12, "used": 0.12}
    for rows in prop["per_100"]["modes"].values():
        for key in ("current", "proposed"):
            r = rows[key]
            assert r["missed"] == pytest.approx(12 * (1 - r["sensitivity"]), abs=0.01)
            assert r["referrals"] == pytest.approx(
                12 * r["sensitivity"] + 88 * (1 - r["specificity"]), abs=0.01)
            assert r["missed_ci"][0] <= r["missed"] <= r["missed_ci"][1]
            assert r["referrals_ci"][0] <= r["referrals"] <= r["referrals_ci"][1]
    state = client.post("/api/v1/calibration", json={
        "proposal_id": prop["id"], "override": {"reason": "test", "by": "AB"}}).get_json()
    assert state["prevalence"] == 0.12 and state["profile"]["prevalence"] == 0.12
    st = get_state(guard_app)
    assert SiteProfile(st.config["data_dir"]).prevalence_for(st.model.sha256) == 0.12
    # a proposal made without a share keeps none
    state = client.post("/api/v1/calibration", json={
        "proposal_id": default["id"], "override": {"reason": "test", "by": "AB"}}).get_json()
    assert state["prevalence"] is None


def test_guard_is_judged_against_the_thresholds_in_use_when_accepted(guard_app):
    client = guard_app.test_client()
    rng = np.random.default_rng(3)
    _confirm_scores(guard_app, list(rng.uniform(0.0, 0.05, 25)), list(rng.uniform(0.2, 0.9, 25)))
    first = _propose(client)
    assert not first["guard"]["blocked"]  # lower than the model's
    _confirm_scores(guard_app, [], list(rng.uniform(0.06, 0.15, 25)))
    lower = _propose(client)
    assert all(lower["thresholds"][m] < first["thresholds"][m] for m in lower["thresholds"])
    assert client.post("/api/v1/calibration", json={"proposal_id": lower["id"]}).status_code == 200
    # the first proposal now raises the thresholds in use, with 50 pneumonias: refused
    r = client.post("/api/v1/calibration", json={"proposal_id": first["id"]})
    assert (r.status_code, r.get_json()["error"]["code"]) == (409, "guard_rail")
    assert client.get("/api/v1/calibration").get_json()["thresholds"] == lower["thresholds"]


# --- real X-rays through the app's pipeline (slow) ---------------------------------------

def _files(root: Path, n_normal: int, n_pneumonia: int) -> list[tuple[Path, str]]:
    return ([(f, "normal") for f in sorted((root / "NORMAL").glob("*.jpeg"))[:n_normal]]
            + [(f, "pneumonia") for f in sorted((root / "PNEUMONIA").glob("*.jpeg"))[:n_pneumonia]])


def _analyse_and_confirm(client, files: list[tuple[Path, str]]) -> int:
    """Post each X-ray, confirm its finding; returns how many the model answered."""
    answered = 0
    for path, finding in files:
        r = client.post("/api/v1/predict", content_type="multipart/form-data",
                        data={"image": (io.BytesIO(path.read_bytes()), path.name)})
        if r.status_code != 200:  # refused as not a chest X-ray: never confirmed
            continue
        answered += 1
        c = client.put(f"/api/v1/history/{r.get_json()['id']}/confirmation",
                       json={"finding": finding, "by": "RN"})
        assert c.status_code == 200
    return answered


@pytest.fixture
def bundled_app(tmp_path):
    from pneumo.app.pipeline.onnx_model import OnnxModel

    app = create_app({"model": OnnxModel(), "data_dir": tmp_path / "data", "secret_key": "t"})
    yield app
    get_state(app).history.close()


@pytest.mark.slow
@pytest.mark.skipif(not EXTERNAL_VAL.is_dir(), reason="needs ../shared/data/external_val")
def test_external_validation_30_and_30_raise_is_blocked_and_the_override_audited(bundled_app):
    """The issue's Why: 30 NORMAL + 30 PNEUMONIA external validation X-rays move the screening
    threshold from the model's 29% to about 60%; that now needs an override."""
    client = bundled_app.test_client()
    model = get_state(bundled_app).model.thresholds
    assert _analyse_and_confirm(client, _files(EXTERNAL_VAL, 30, 30)) >= 59
    prop = _propose(client)
    assert prop["n"]["pneumonia"] == 30 and prop["n"]["normal"] >= 29
    assert prop["thresholds"]["screening"] > model["screening"] + 0.2
    g = prop["guard"]
    assert g["blocked"]
    s = g["modes"]["screening"]
    assert (s["direction"], s["verdict"], s["pneumonias"], s["needed"]) == (
        "raises", "raises_too_few", 30, 149)
    assert g["modes"]["balanced"]["verdict"] in ("raises_too_few", "lowers", "unchanged")
    per = prop["per_100"]["modes"]["screening"]["proposed"]
    assert per["missed_ci"][0] <= per["missed"] <= per["missed_ci"][1]
    r = client.post("/api/v1/calibration", json={"proposal_id": prop["id"], "by": "Lead"})
    assert (r.status_code, r.get_json()["error"]["code"]) == (409, "guard_rail")
    assert client.get("/api/v1/calibration").get_json()["source"] == "model"
    r = client.post("/api/v1/calibration", json={
        "proposal_id": prop["id"], "override": {"reason": "pilot, reviewed weekly", "by": "JM"}})
    assert r.status_code == 200 and r.get_json()["source"] == "site"
    (row,) = _accepted_rows(client)
    assert row["by"] == "JM" and row["new"]["override"]["reason"] == "pilot, reviewed weekly"
    assert row["new"]["guard"]["modes"]["screening"]["verdict"] == "raises_too_few"


@pytest.mark.slow
@pytest.mark.skipif(not (EXTERNAL_VAL.is_dir() and TRAIN.is_dir()),
                    reason="needs ../shared/data/external_val and chest_xray/train")
def test_real_lowering_is_allowed_and_enough_pneumonias_still_need_the_bound(bundled_app):
    """Training X-rays (scored only) lower both thresholds: one click. Then every external
    validation X-ray: the proposal raises them again with 255 confirmed pneumonias (more than
    the 149 needed), but the thresholds chosen on one half miss some of the other half's, so
    the exact lower bound stays below the rule: blocked, for that reason."""
    client = bundled_app.test_client()
    model = get_state(bundled_app).model.thresholds
    _analyse_and_confirm(client, _files(TRAIN, 30, 60))
    low = _propose(client)
    assert all(low["thresholds"][m] < model[m] for m in model)
    assert not low["guard"]["blocked"]
    assert client.post("/api/v1/calibration", json={"proposal_id": low["id"]}).status_code == 200
    _analyse_and_confirm(client, _files(EXTERNAL_VAL, 1000, 1000))
    prop = _propose(client)
    assert prop["n"]["pneumonia"] >= 149
    raised = {m: v for m, v in prop["guard"]["modes"].items() if v["direction"] == "raises"}
    assert raised and prop["guard"]["blocked"]
    for v in raised.values():
        assert v["pneumonias"] >= v["needed"] and v["verdict"] == "raises_below_rule"
        assert v["lower_bound"] < v["rule"] and v["missed"] > 0


@pytest.mark.slow
@pytest.mark.skipif(not EXTERNAL_VAL.is_dir(), reason="needs ../shared/data/external_val")
def test_calibrate_cli_accepts_a_blocked_proposal_only_with_an_override(tmp_path, capsys):
    from pneumo.cli import main

    folder = tmp_path / "labelled"
    for path, finding in _files(EXTERNAL_VAL, 30, 30):
        (folder / finding.upper()).mkdir(parents=True, exist_ok=True)
        (folder / finding.upper() / path.name).write_bytes(path.read_bytes())
    data, out = tmp_path / "data", tmp_path / "site"
    args = ["calibrate", "--folder", str(folder), "--data-dir", str(data), "--out", str(out),
            "--accept", "--prevalence", "0.2"]
    assert main(args) == 3
    assert "guard rail, screening: raises: blocked, needs 149" in capsys.readouterr().out
    assert not (data / "site_calibration.json").exists()
    report = (out / "proposal.md").read_text(encoding="utf-8")
    assert "## Guard rail" in report and "Per 100 children (pneumonia share 0.20" in report
    assert main([*args, "--override-reason", "pilot"]) == 2  # initials are required too
    assert main([*args, "--override-reason", "pilot", "--by", "JM"]) == 0
    profile = json.loads((data / "site_calibration.json").read_text(encoding="utf-8"))
    assert profile["override"]["reason"] == "pilot" and profile["prevalence"] == 0.2
    from pneumo.app.history.schema import DB_NAME
    from pneumo.app.history.store import HistoryStore

    history = HistoryStore(data / DB_NAME)
    try:
        (row,) = history.audit(action="calibration_accepted")
    finally:
        history.close()
    assert row["new"]["override"]["by"] == "JM"
