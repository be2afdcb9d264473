"""Models that carry calibration, intensity normalisation and the borderline band."""

import csv
import io

import numpy as np
import pytest
from apptools import XRAY_NORMAL, all_fixture_xrays, rewrite_model

from edge_app.app import create_app
from edge_app.calibration import apply_calibration
from edge_app.imaging import decode_image, preprocess_path, to_model_input
from edge_app.onnx_model import OnnxModel
from edge_app.predictor import BORDERLINE_NOTE, NEXT_STEP_BORDERLINE, Predictor
from edge_app.state import get_state

pytest.importorskip("onnx")

CALIBRATION = {"method": "platt", "a": 2.0, "b": -1.0, "fitted_on": "test"}
THRESHOLDS = {"balanced": 0.5, "screening": 0.2}


@pytest.fixture(scope="module")
def calibrated(test_model_path, tmp_path_factory) -> OnnxModel:
    """The test model with a Platt calibration (a=2, b=-1) and calibrated-scale thresholds."""
    path = rewrite_model(test_model_path, tmp_path_factory.mktemp("cal") / "cal.onnx",
                         calibration=CALIBRATION, thresholds=THRESHOLDS)
    return OnnxModel(path)


def _batch(size: int) -> np.ndarray:
    return np.stack([preprocess_path(p, size) for p in all_fixture_xrays()])


def test_bundled_model_answers_on_its_calibrated_scale(model):
    """The shipped model carries a monotonic calibration fitted on external validation."""
    assert model.calibration and model.calibration["a"] > 0 and model.intensity == "none"
    x = _batch(model.input_size)
    out = model.run(x)
    np.testing.assert_allclose(out.probability,
                               apply_calibration(out.raw_probability, model.calibration),
                               rtol=1e-5, atol=1e-6)
    order = np.argsort(out.raw_probability)
    assert np.all(np.diff(out.probability[order]) >= -1e-6)  # calibration keeps the ranking


def test_calibration_is_applied(model, calibrated):
    assert calibrated.calibration["a"] == 2.0 and calibrated.thresholds == THRESHOLDS
    x = _batch(calibrated.input_size)
    raw = model.predict_raw(x)  # the same network, before any calibration
    out = calibrated.run(x)
    np.testing.assert_allclose(out.raw_probability, raw, atol=1e-7)
    np.testing.assert_allclose(calibrated.predict(x), apply_calibration(raw, CALIBRATION),
                               rtol=1e-5, atol=1e-7)
    def logit(p):
        p = np.clip(np.asarray(p, np.float64), 1e-12, 1 - 1e-7)
        return np.log(p / (1 - p))

    # it really changed something (on the logit scale: confident answers sit near 0 or 1)
    assert not np.allclose(logit(out.probability), logit(raw), atol=1e-2)
    # the CAM stays in the raw logit units (the heatmap normalises it per image)
    np.testing.assert_allclose(out.cam, model.run(x).cam, atol=1e-6)


def test_pipeline_answers_with_the_calibrated_probability(model, calibrated):
    raw = Predictor(model).predict(XRAY_NORMAL.read_bytes(), heatmap=False)
    res = Predictor(calibrated).predict(XRAY_NORMAL.read_bytes(), heatmap=False)
    expected = float(apply_calibration(raw.raw_probability, CALIBRATION))
    assert res.probability == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert res.raw_probability == pytest.approx(raw.raw_probability, abs=1e-7)
    assert res.threshold == THRESHOLDS["balanced"]
    assert res.label == calibrated.label_for(res.probability, "balanced")[0]
    assert res.to_json()["probability"] == pytest.approx(expected, abs=1e-6)


def test_model_confidence_band(model):
    lo, hi = model.thresholds["screening"], model.thresholds["balanced"]
    assert model.confidence((lo + hi) / 2) == "borderline"
    assert model.confidence(lo) == "borderline"
    assert model.confidence(hi) == "clear"
    assert model.confidence(lo / 2) == "clear" and model.confidence((1 + hi) / 2) == "clear"


@pytest.fixture(scope="module")
def borderline_model(calibrated, test_model_path, tmp_path_factory) -> OnnxModel:
    """The calibrated model with thresholds chosen so that XRAY_NORMAL lands between them."""
    p = Predictor(calibrated).predict(XRAY_NORMAL.read_bytes(), heatmap=False).probability
    thresholds = {"balanced": p + (1 - p) / 2, "screening": p / 2}
    path = rewrite_model(test_model_path, tmp_path_factory.mktemp("band") / "band.onnx",
                         calibration=CALIBRATION, thresholds=thresholds)
    return OnnxModel(path)


@pytest.fixture
def borderline_client(borderline_model, tmp_path):
    app = create_app({"model": borderline_model, "data_dir": tmp_path / "data",
                      "secret_key": "test-secret"})
    yield app.test_client()
    get_state(app).history.close()


def _post(client, data: bytes, **fields):
    return client.post("/api/v1/predict", content_type="multipart/form-data",
                       data={"image": (io.BytesIO(data), "x.jpeg"), **fields})


@pytest.mark.parametrize("mode,label", [("balanced", "NORMAL"), ("screening", "PNEUMONIA")])
def test_borderline_answer_page_report_and_history(borderline_client, mode, label):
    r = _post(borderline_client, XRAY_NORMAL.read_bytes(), mode=mode)
    assert r.status_code == 200, r.get_data(as_text=True)
    b = r.get_json()
    assert b["confidence"] == "borderline" and b["label"] == label  # the two modes disagree
    rec = borderline_client.get(f"/api/v1/history/{b['id']}").get_json()
    assert rec["confidence"] == "borderline"
    rows = list(csv.DictReader(io.StringIO(
        borderline_client.get("/api/v1/history.csv").get_data(as_text=True))))
    assert rows[-1]["confidence"] == "borderline"
    report = borderline_client.get(f"/report/{b['id']}").get_data(as_text=True)
    assert "Borderline result" in report and "A clinician should review" in report
    assert "Borderline (the screening and balanced settings disagree)" in report
    assert "(borderline)" in b["headline"] and b["next_steps"][0] == NEXT_STEP_BORDERLINE


def test_clear_report_has_no_borderline_note(client):
    b = _post(client, XRAY_NORMAL.read_bytes()).get_json()
    assert b["confidence"] == "clear"  # the bundled model is sure about this fixture
    report = client.get(f"/report/{b['id']}").get_data(as_text=True)
    assert "Borderline result" not in report and "<dt>Confidence</dt><dd>Clear</dd>" in report


def test_page_carries_the_borderline_note_in_words(client):
    html = client.get("/").get_data(as_text=True)
    assert 'id="r-borderline"' in html and "settings disagree on this image" in html
    assert "Borderline result: the screening and balanced settings disagree" in BORDERLINE_NOTE
    js = client.get("/static/app.js").get_data(as_text=True)
    assert 'r.confidence === "borderline"' in js and "r-borderline" in js


def test_equalize_model_feeds_equalized_pixels(test_model_path, tmp_path, monkeypatch):
    path = rewrite_model(test_model_path, tmp_path / "eq.onnx", intensity="equalize",
                         ood={})  # the network never saw equalized images: no OOD refusal
    m = OnnxModel(path)
    assert m.intensity == "equalize"
    seen = []
    real_run = m.run

    def spy(batch):
        seen.append(np.array(batch))
        return real_run(batch)

    monkeypatch.setattr(m, "run", spy)
    data = XRAY_NORMAL.read_bytes()
    res = Predictor(m).predict(data, heatmap=False)
    gray = decode_image(data).gray
    expected = to_model_input(gray, m.input_size, intensity="equalize")
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0][0], expected)
    assert not np.array_equal(expected, to_model_input(gray, m.input_size))
    np.testing.assert_array_equal(m.model_input(gray), expected)
    assert res.probability == pytest.approx(float(real_run(expected[None]).probability[0]))


def test_model_info_endpoint_shows_new_metadata(test_model_path, tmp_path):
    path = rewrite_model(test_model_path, tmp_path / "m.onnx", calibration=CALIBRATION,
                         intensity="stretch", operating_points_source="external validation",
                         external_metrics={"auc": 0.9})
    app = create_app({"model": OnnxModel(path), "data_dir": tmp_path / "data",
                      "secret_key": "test-secret"})
    body = app.test_client().get("/api/v1/model").get_json()
    get_state(app).history.close()
    assert body["calibration"] == CALIBRATION and body["intensity"] == "stretch"
    assert body["operating_points_source"] == "external validation"
    assert body["external_metrics"] == {"auc": 0.9}


@pytest.mark.parametrize("changes", [{"intensity": "sharpen"},
                                     {"calibration": {"method": "platt", "a": -1, "b": 0}},
                                     {"calibration": {"method": "isotonic"}}])
def test_malformed_metadata_fails_at_load(test_model_path, tmp_path, changes):
    path = rewrite_model(test_model_path, tmp_path / "bad.onnx", **changes)
    with pytest.raises(ValueError):
        OnnxModel(path)
