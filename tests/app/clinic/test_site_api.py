"""Confirmed findings, site thresholds and the drift check, end to end through the API.

Real X-rays: perturbed copies of the six fixture images (fast) and, marked slow, real
training images from ../shared/data with the production minimum of cases.
"""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image, ImageOps
from tinydata import SHARED_DATA, xray_variants

from pneumo.app.web.app import create_app
from pneumo.app.web.state import get_state


def _predict(client, data: bytes, **fields) -> dict:
    r = client.post("/api/v1/predict", data={"image": (io.BytesIO(data), "x.jpeg"), **fields},
                    content_type="multipart/form-data")
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def _confirm(client, rid: str, **body):
    return client.put(f"/api/v1/history/{rid}/confirmation", json=body)


@pytest.fixture
def site_app(app_config):
    """An app that proposes thresholds from 6 cases per class (the tests' small sets)."""
    app = create_app({**app_config, "site_min_cases": 6})
    yield app
    get_state(app).history.close()


def test_confirmation_is_stored_changed_and_audited(client):
    body = _predict(client, xray_variants(1)[0][0])
    assert body["threshold_source"] == "model"
    r = _confirm(client, body["id"], finding="normal", note="Radiologist: clear", by="AB")
    assert r.status_code == 200
    rec = r.get_json()
    assert (rec["finding"], rec["finding_note"], rec["finding_by"]) == ("normal",
                                                                        "Radiologist: clear", "AB")
    assert rec["finding_at"] and rec["id"] == body["id"]
    rec2 = _confirm(client, body["id"], finding="Pneumonia", by="CD").get_json()
    assert rec2["finding"] == "pneumonia" and rec2["finding_note"] is None
    assert client.get(f"/api/v1/history/{body['id']}").get_json()["finding"] == "pneumonia"
    rows = client.get(f"/api/v1/audit?record_id={body['id']}").get_json()["items"]
    assert [(a["action"], a["old"]["finding"], a["new"]["finding"], a["by"]) for a in rows] == [
        ("confirmation", None, "normal", "AB"), ("confirmation", "normal", "pneumonia", "CD")]
    csv_text = client.get("/api/v1/history.csv").data.decode("utf-8-sig")
    header, row = csv_text.splitlines()[:2]
    assert "finding" in header.split(",") and "pneumonia" in row.split(",")


@pytest.mark.parametrize("body, status, code", [
    ({"finding": "maybe"}, 400, "bad_finding"),
    ({"finding": 3}, 400, "bad_finding"),
    ({}, 400, "bad_finding"),
    ({"finding": "normal", "note": "x" * 501}, 400, "bad_note"),
    ({"finding": "normal", "by": ["AB"]}, 400, "bad_by"),
])
def test_confirmation_refuses_bad_input_and_changes_nothing(client, body, status, code):
    rid = _predict(client, xray_variants(1)[0][0])["id"]
    r = _confirm(client, rid, **body)
    assert (r.status_code, r.get_json()["error"]["code"]) == (status, code)
    assert client.get(f"/api/v1/history/{rid}").get_json()["finding"] is None
    assert client.get("/api/v1/audit").get_json()["items"] == []


def test_confirmation_unknown_record_and_non_json(client):
    assert _confirm(client, "0" * 32, finding="normal").status_code == 404
    assert _confirm(client, "nope", finding="normal").status_code == 404
    rid = _predict(client, xray_variants(1)[0][0])["id"]
    r = client.put(f"/api/v1/history/{rid}/confirmation", data="finding=normal",
                   content_type="application/x-www-form-urlencoded")
    assert (r.status_code, r.get_json()["error"]["code"]) == (400, "bad_json")


def test_bidi_controls_are_stripped_from_note_and_initials(client):
    rid = _predict(client, xray_variants(1)[0][0])["id"]
    rec = _confirm(client, rid, finding="other", note="a\u202eb\u200bc", by="A\u202eB").get_json()
    assert (rec["finding_note"], rec["finding_by"]) == ("abc", "AB")


def test_too_few_cases_gives_a_plain_422(client):
    for data, label in xray_variants(3):
        _confirm(client, _predict(client, data)["id"], finding=label)
    r = client.post("/api/v1/calibration/proposal", json={})
    assert r.status_code == 422
    err = r.get_json()["error"]
    assert err["code"] == "too_few_cases" and err["n"] == {"normal": 3, "pneumonia": 3}
    assert err["minimum"] == 25 and "25" in err["message"]


def test_propose_accept_use_revert_and_audit(site_app):
    client = site_app.test_client()
    model = get_state(site_app).model
    cases = xray_variants(6)
    for data, label in cases:
        rid = _predict(client, data, patient_ref="P")["id"]
        assert _confirm(client, rid, finding=label, by="RN").status_code == 200
    # the same image confirmed twice counts once
    rid = _predict(client, cases[0][0])["id"]
    _confirm(client, rid, finding=cases[0][1])
    state = client.get("/api/v1/calibration").get_json()
    assert state["source"] == "model" and state["confirmed_cases"] == {"normal": 6,
                                                                      "pneumonia": 6}

    prop = client.post("/api/v1/calibration/proposal", json={}).get_json()
    assert prop["n"] == {"normal": 6, "pneumonia": 6} and len(prop["id"]) == 32
    assert set(prop["thresholds"]) == {"balanced", "screening"}
    assert prop["thresholds"]["screening"] <= prop["thresholds"]["balanced"]
    m = prop["metrics"]
    assert m["current"]["balanced"]["threshold"] == pytest.approx(model.thresholds["balanced"])
    assert m["proposed"]["balanced"]["sensitivity"] >= 0.95
    assert len(m["proposed"]["balanced"]["specificity_ci"]) == 2
    assert m["roc"]["fpr"][0] == 0.0 and m["roc"]["tpr"][-1] == 1.0
    assert 0.0 <= m["auc"] <= 1.0 and "cross" in m["note"]

    assert client.post("/api/v1/calibration", json={"proposal_id": "x"}).status_code == 404
    # six confirmed pneumonias can never support a raise: a raise needs an override
    raises = [m for m, g in prop["guard"]["modes"].items() if g["direction"] == "raises"]
    assert prop["guard"]["blocked"] is bool(raises)
    body = {"proposal_id": prop["id"], "by": "Lead"}
    if raises:
        refused = client.post("/api/v1/calibration", json=body)
        assert (refused.status_code, refused.get_json()["error"]["code"]) == (409, "guard_rail")
        body["override"] = {"reason": "test images", "by": "Lead"}
    accepted = client.post("/api/v1/calibration", json=body)
    assert accepted.status_code == 200
    state = accepted.get_json()
    assert state["source"] == "site" and state["thresholds"] == prop["thresholds"]
    assert state["profile"]["n"] == prop["n"] and state["profile"]["by"] == "Lead"
    assert state["profile"]["model_sha256"] == model.sha256

    after = _predict(client, cases[-1][0])
    assert after["threshold_source"] == "site"
    t = prop["thresholds"]["balanced"]
    assert after["threshold"] == pytest.approx(t)
    stored = client.get(f"/api/v1/history/{after['id']}").get_json()  # full precision
    assert after["label"] == ("PNEUMONIA" if stored["probability"] >= t else "NORMAL")
    assert stored["threshold_source"] == "site"
    assert client.get("/api/v1/status").get_json()["threshold_source"] == "site"

    reverted = client.delete("/api/v1/calibration?by=Lead").get_json()
    assert reverted["source"] == "model" and reverted["profile"] is None
    again = _predict(client, cases[-1][0])
    assert again["threshold_source"] == "model"
    assert again["threshold"] == pytest.approx(model.thresholds["balanced"])
    actions = [a["action"] for a in client.get("/api/v1/audit").get_json()["items"]]
    assert actions.count("confirmation") == 13
    assert actions[-2:] == ["calibration_accepted", "calibration_reverted"]


def test_profile_of_another_model_is_not_used_and_says_so(site_app, app_config, tmp_path,
                                                          test_model_path):
    from pneumo.app.pipeline.onnx_model import OnnxModel, read_metadata
    from pneumo.export.metadata import write_metadata

    client = site_app.test_client()
    for data, label in xray_variants(6):
        _confirm(client, _predict(client, data)["id"], finding=label)
    prop = client.post("/api/v1/calibration/proposal", json={}).get_json()
    assert client.post("/api/v1/calibration", json={
        "proposal_id": prop["id"], "override": {"reason": "test", "by": "AB"}}).status_code == 200
    get_state(site_app).history.close()

    other = tmp_path / "other.onnx"  # the same network with other metadata: another sha256
    shutil.copy(test_model_path, other)
    meta, card = read_metadata(other)
    meta["version"] += "-b"
    write_metadata(other, meta, card)
    app2 = create_app({**app_config, "model": OnnxModel(other), "site_min_cases": 6})
    try:
        c2 = app2.test_client()
        state = c2.get("/api/v1/calibration").get_json()
        assert state["source"] == "model" and "another model" in state["warning"]
        assert state["stale_profile"]["model_sha256"] == get_state(site_app).model.sha256
        assert _predict(c2, xray_variants(1)[0][0])["threshold_source"] == "model"
        # a proposal made with the first model cannot be accepted here either
        assert c2.post("/api/v1/calibration",
                       json={"proposal_id": prop["id"]}).status_code == 404
    finally:
        get_state(app2).history.close()


def test_cross_site_confirmation_is_refused(client):
    rid = _predict(client, xray_variants(1)[0][0])["id"]
    r = client.put(f"/api/v1/history/{rid}/confirmation", json={"finding": "normal"},
                   headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert client.get(f"/api/v1/history/{rid}").get_json()["finding"] is None


def test_status_reports_drift_only_when_images_change(client):
    status = client.get("/api/v1/status").get_json()
    assert status["drift"]["status"] == "insufficient"
    good = xray_variants(30, seed=1)
    for data, _ in good[:25] + good[30:55]:
        _predict(client, data)
    drift = client.get("/api/v1/status").get_json()["drift"]
    assert drift["n"] == 50 and drift["status"] in ("ok", "drift")
    names = {c["name"] for c in drift["checks"]}
    assert names == {"image_appearance", "refusals", "borderline"}


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "train").is_dir(), reason="needs ../shared/data")
def test_real_images_no_drift_then_drift_after_a_processing_change(client):
    """Real training X-rays look like the reference; the same X-rays inverted do not."""
    files = {c: sorted((SHARED_DATA / "train" / c).glob("*.jpeg"))[:30]
             for c in ("NORMAL", "PNEUMONIA")}
    originals = [p.read_bytes() for c in files for p in files[c]]
    for data in originals:
        _predict(client, data)
    before = client.get("/api/v1/status").get_json()["drift"]
    assert before["status"] == "ok", before
    # The same unit after a processing change: darker, contrast squeezed (still X-rays).
    for data in originals:
        img = Image.open(io.BytesIO(data)).convert("L")
        img = ImageOps.autocontrast(img.point(lambda v: int(40 + 0.45 * v)), cutoff=0)
        img = img.point(lambda v: int(255 * (v / 255) ** 2.2))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        r = client.post("/api/v1/predict", data={"image": (io.BytesIO(buf.getvalue()), "x.jpeg")},
                        content_type="multipart/form-data")
        assert r.status_code in (200, 422)
    after = client.get("/api/v1/status").get_json()["drift"]
    assert after["status"] == "drift", after
    assert "Check the X-ray unit" in after["message"]
