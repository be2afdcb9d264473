"""The JSON API through Flask's test client: answers, every error path, history."""

import csv
import hashlib
import io

import numpy as np
import pytest
from apptools import (
    XRAY_NORMAL,
    XRAY_PNEUMONIA,
    blank_png,
    dicom_bytes,
    document_png,
    encode,
    gray_array,
    noise_png,
    png16_bytes,
    skimage_png,
)
from PIL import Image

from pneumo.app.web.app import create_app
from pneumo.app.web.state import get_state


def _post(client, data: bytes | None, filename="x.jpeg", **fields):
    form = dict(fields)
    if data is not None:
        form["image"] = (io.BytesIO(data), filename)
    return client.post("/api/v1/predict", data=form, content_type="multipart/form-data")


def _error(resp, status, code):
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.is_json
    body = resp.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def test_healthz(client, model):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.get_json() == {"status": "ok", "model": {"name": model.name,
                                                      "version": model.version,
                                                      "sha256": model.sha256,
                                                      "source": {"source": "bundled",
                                                                 "text": "bundled with the app"}}}


def test_model_endpoint(client, model):
    body = client.get("/api/v1/model").get_json()
    assert body["version"] == model.version and body["input_size"] == model.input_size
    assert body["thresholds"] == model.thresholds
    assert "mean" not in body["metadata"]["ood"] and "precision" not in body["metadata"]["ood"]
    assert body["model_card"] == model.model_card
    assert body["intensity"] == model.intensity and body["calibration"] == model.calibration
    assert len(client.get("/api/v1/model").data) < 200_000


@pytest.mark.parametrize(("path", "expected"), [(XRAY_NORMAL, "NORMAL"),
                                              (XRAY_PNEUMONIA, "PNEUMONIA")],
                         ids=["normal", "pneumonia"])
def test_predict_jpeg(client, model, path, expected):
    data = path.read_bytes()
    r = _post(client, data, patient_ref="PAT-001")
    assert r.status_code == 200, r.get_data(as_text=True)
    b = r.get_json()
    assert b["label"] == expected  # the fixture's known class (its folder)
    assert 0.0 <= b["probability"] <= 1.0
    assert b["mode"] == "balanced"
    assert b["threshold"] == pytest.approx(model.thresholds["balanced"], abs=1e-6)
    assert b["label"] == model.label_for(b["probability"], "balanced")[0]
    assert b["confidence"] in ("clear", "borderline")
    assert b["confidence"] == model.confidence(b["probability"])
    assert b["model_version"] == model.version
    assert b["sha256"] == hashlib.sha256(data).hexdigest()
    assert b["input"] == {"format": "JPEG", "width": 224, "height": 224, "bit_depth": 8}
    assert isinstance(b["quality"], list)
    assert b["message"].startswith("Signs of pneumonia likely" if expected == "PNEUMONIA"
                                   else "No signs of pneumonia detected")
    for k in ("decode", "checks", "preprocess", "inference", "total"):
        assert b["timings_ms"][k] >= 0
    assert b["patient_ref"] == "PAT-001"
    heat = client.get(b["heatmap_url"])
    assert heat.status_code == 200 and heat.mimetype == "image/png"
    assert Image.open(io.BytesIO(heat.data)).size == (224, 224)
    rec = client.get(f"/api/v1/history/{b['id']}").get_json()
    assert rec["sha256"] == b["sha256"] and rec["label"] == b["label"]
    assert rec["patient_ref"] == "PAT-001" and rec["probability"] == pytest.approx(b["probability"], abs=1e-6)
    assert rec["width"] == 224 and rec["mode"] == "balanced"
    assert rec["confidence"] == b["confidence"]


def test_screening_mode(client, model):
    b = _post(client, XRAY_NORMAL.read_bytes(), mode="screening").get_json()
    assert b["mode"] == "screening"
    assert b["threshold"] == pytest.approx(model.thresholds["screening"], abs=1e-6)


def test_same_answer_for_same_pixels_in_other_formats(client):
    ref = _post(client, XRAY_NORMAL.read_bytes()).get_json()["probability"]
    png = encode(Image.fromarray(gray_array()), "PNG")
    assert _post(client, png, "x.png").get_json()["probability"] == pytest.approx(ref, abs=1e-6)


def test_png_16_bit(client):
    r = _post(client, png16_bytes(), "x.png")
    assert r.status_code == 200, r.get_data(as_text=True)
    b = r.get_json()
    assert b["input"]["bit_depth"] == 16
    assert "rescaled_bit_depth" in {w["code"] for w in b["quality"]}


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("window", [None, (1020.0, 2041.0)], ids=["nowindow", "window"])
def test_dicom(client, photometric, window):
    from pneumo.app.pipeline.decode import decode_image

    data = dicom_bytes(photometric=photometric, slope=2.0, intercept=-1024.0, window=window)
    r = _post(client, data, "image.dcm")
    assert r.status_code == 200, r.get_data(as_text=True)
    b = r.get_json()
    assert b["input"]["format"] == "DICOM"
    # The same answer as for the same pixels sent as PNG (whatever the model says).
    png = encode(decode_image(data).gray, "PNG")
    assert b["probability"] == pytest.approx(_post(client, png, "x.png").get_json()["probability"],
                                             abs=1e-6)


def test_dicom_pixels_match_the_xray():
    from pneumo.app.pipeline.decode import decode_image

    g = gray_array().astype(int)
    for ph in ("MONOCHROME2", "MONOCHROME1"):
        out = np.asarray(decode_image(dicom_bytes(photometric=ph, window=(1020.0, 2041.0))).gray)
        assert np.abs(out.astype(int) - g).max() <= 3, ph


def test_compressed_dicom_is_415(client):
    # JPEG, JPEG-LS, JPEG 2000 and RLE are decoded (test_dicom_compressed.py); video is not
    data = dicom_bytes(transfer_syntax="1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264
                       encapsulated=XRAY_NORMAL.read_bytes())
    err = _error(_post(client, data, "x.dcm"), 415, "unsupported_dicom_compression")
    assert "compression" in err["message"]


def test_preview_on_request(client):
    b = _post(client, XRAY_NORMAL.read_bytes(), preview="1").get_json()
    assert b["preview"].startswith("data:image/png;base64,")
    assert "preview" not in _post(client, XRAY_NORMAL.read_bytes()).get_json()


# --- errors: always JSON, never a 500 for client input ---------------------------------

def test_missing_field(client):
    _error(_post(client, None, mode="balanced"), 400, "missing_image")
    _error(client.post("/api/v1/predict"), 400, "missing_image")
    _error(client.post("/api/v1/predict", json={"image": "x"}), 400, "missing_image")


def test_bad_mode(client):
    err = _error(_post(client, XRAY_NORMAL.read_bytes(), mode="aggressive"), 400, "bad_mode")
    assert "balanced" in err["message"]


def test_bad_patient_ref(client):
    _error(_post(client, XRAY_NORMAL.read_bytes(), patient_ref="x" * 65), 400, "bad_patient_ref")


def test_empty_file(client):
    _error(_post(client, b""), 415, "empty_file")


def test_truncated_jpeg(client):
    data = XRAY_NORMAL.read_bytes()
    _error(_post(client, data[: len(data) // 2]), 415, "undecodable_image")


def test_text_file(client):
    _error(_post(client, b"name,value\nfoo,1\n" * 50, "notes.jpeg"), 415, "unsupported_image")


def test_gif_is_unsupported(client):
    img = Image.fromarray(gray_array())
    _error(_post(client, encode(img, "GIF"), "x.gif"), 415, "unsupported_image")


def test_too_large_upload(model, tmp_path):
    app = create_app({"model": model, "data_dir": tmp_path, "max_upload_bytes": 1024 * 1024})
    c = app.test_client()
    err = _error(_post(c, b"\xff\xd8\xff" + b"\0" * (2 * 1024 * 1024)), 413, "file_too_large")
    assert "1 MB" in err["message"]


def test_decompression_bomb(client):
    bomb = encode(Image.new("L", (12000, 12000), 0), "PNG")  # 144 megapixels, ~150 kB
    assert len(bomb) < 1_000_000
    _error(_post(client, bomb, "bomb.png"), 413, "image_too_large")


@pytest.mark.parametrize("make,reason", [
    (lambda: skimage_png("astronaut"), "colour_image"),
    (lambda: skimage_png("coffee"), "colour_image"),
    (document_png, "document_or_graphic"),
    (lambda: skimage_png("page"), "document_or_graphic"),
    (noise_png, "noise_image"),
    (blank_png, "blank_image"),
    (lambda: skimage_png("camera"), None),
], ids=["astronaut", "coffee", "document", "page", "noise", "blank", "camera"])
def test_not_a_chest_xray(client, make, reason):
    err = _error(_post(client, make(), "x.png"), 422, "not_a_chest_xray")
    codes = [r["code"] for r in err["reasons"]]
    if reason:
        assert reason in codes
    assert "chest X-ray" in err["message"]


def test_refusals_are_not_recorded(client):
    _post(client, noise_png(), "x.png")
    _post(client, b"")
    assert client.get("/api/v1/history").get_json()["total"] == 0


def test_unknown_route_and_method(client):
    _error(client.get("/api/v1/nothing"), 404, "not_found")
    r = client.get("/api/v1/predict")
    _error(r, 405, "method_not_allowed")
    assert "POST" in r.headers["Allow"]


def test_internal_error_is_json(app, client, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(get_state(app).predictor, "predict", boom)
    err = _error(_post(client, XRAY_NORMAL.read_bytes()), 500, "internal_error")
    assert "secret" not in err["message"]


# --- history -------------------------------------------------------------------------------

def _fill(client, n):
    ids = []
    for i in range(n):
        ids.append(_post(client, XRAY_NORMAL.read_bytes(), patient_ref=f"P{i}").get_json()["id"])
    return ids


def test_history_paging(client):
    ids = _fill(client, 5)
    b = client.get("/api/v1/history?page=1&per_page=2").get_json()
    assert b["total"] == 5 and b["pages"] == 3 and b["page"] == 1
    assert [r["id"] for r in b["items"]] == [ids[4], ids[3]]
    assert b["items"][0]["heatmap_url"].endswith("/heatmap.png")
    last = client.get("/api/v1/history?page=3&per_page=2").get_json()
    assert [r["id"] for r in last["items"]] == [ids[0]]
    _error(client.get("/api/v1/history?page=0"), 400, "bad_parameter")
    _error(client.get("/api/v1/history?per_page=abc"), 400, "bad_parameter")
    _error(client.get("/api/v1/history?per_page=100000"), 400, "bad_parameter")


def test_history_date_filter(client):
    _fill(client, 2)
    today = client.get("/api/v1/history").get_json()["items"][0]["created_at"][:10]
    assert client.get(f"/api/v1/history?from={today}&to={today}").get_json()["total"] == 2
    assert client.get("/api/v1/history?to=2000-01-01").get_json()["total"] == 0
    assert client.get("/api/v1/history?from=2999-01-01").get_json()["total"] == 0
    _error(client.get("/api/v1/history?from=last-week"), 400, "bad_date")


def test_history_csv(client):
    _fill(client, 3)
    _post(client, XRAY_NORMAL.read_bytes(), patient_ref="=HYPERLINK(\"http://x\")")
    r = client.get("/api/v1/history.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert "attachment" in r.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert len(rows) == 4
    assert rows[0]["patient_ref"] == "P0" and rows[0]["label"] in ("NORMAL", "PNEUMONIA")
    assert rows[0]["confidence"] in ("clear", "borderline")
    assert rows[-1]["patient_ref"].startswith("'=")  # not a live spreadsheet formula
    filtered = client.get("/api/v1/history.csv?to=2000-01-01").get_data(as_text=True)
    assert len(filtered.strip().splitlines()) == 1


def test_history_item_errors(client):
    _error(client.get("/api/v1/history/" + "0" * 32), 404, "not_found")
    _error(client.get("/api/v1/history/../../etc/passwd"), 404, "not_found")
    _error(client.get("/api/v1/history/" + "0" * 32 + "/heatmap.png"), 404, "not_found")


def test_old_heatmaps_expire(model, tmp_path):
    app = create_app({"model": model, "data_dir": tmp_path, "heatmap_keep": 2})
    c = app.test_client()
    ids = _fill(c, 3)
    _error(c.get(f"/api/v1/history/{ids[0]}/heatmap.png"), 404, "heatmap_expired")
    assert c.get(f"/api/v1/history/{ids[2]}/heatmap.png").status_code == 200
    assert c.get(f"/api/v1/history/{ids[0]}").get_json()["heatmap_url"] is None


def test_keep_images(model, tmp_path):
    app = create_app({"model": model, "data_dir": tmp_path, "keep_images": True})
    rid = _post(app.test_client(), XRAY_NORMAL.read_bytes()).get_json()["id"]
    assert get_state(app).history.image(rid)[0] == XRAY_NORMAL.read_bytes()


def test_images_not_kept_by_default(app, client):
    rid = _post(client, XRAY_NORMAL.read_bytes()).get_json()["id"]
    assert get_state(app).history.image(rid) is None
