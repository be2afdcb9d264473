"""Models that carry calibration, intensity normalisation and the borderline band."""

import csv
import io
import json

import numpy as np
import pytest
from apptools import XRAY_NORMAL, all_fixture_xrays, rewrite_model

from pneumo.app.pipeline.calibration import apply_calibration
from pneumo.app.pipeline.decode import decode_image
from pneumo.app.pipeline.onnx_model import OnnxModel
from pneumo.app.pipeline.predictor import Predictor
from pneumo.app.pipeline.preprocess import preprocess_path, to_model_input
from pneumo.app.pipeline.wording import HEADLINE, NEXT_STEP
from pneumo.app.web.app import create_app
from pneumo.app.web.state import get_state

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
def test_band_answer_is_review_in_both_settings(borderline_client, mode, label):
    r = _post(borderline_client, XRAY_NORMAL.read_bytes(), mode=mode)
    assert r.status_code == 200, r.get_data(as_text=True)
    b = r.get_json()
    # the setting decides only the binary label; what a person reads is the same
    assert b["outcome"] == "review" and b["label"] == label and b["confidence"] == "borderline"
    assert b["headline"] == HEADLINE["review"] and b["icon"] == "?"
    assert b["next_steps"][0] == NEXT_STEP["review"]
    assert "No signs" not in b["message"] and "\u2713" not in b["message"]
    rec = borderline_client.get(f"/api/v1/history/{b['id']}").get_json()
    assert rec["outcome"] == "review" and rec["headline"] == HEADLINE["review"]
    rows = list(csv.DictReader(io.StringIO(
        borderline_client.get("/api/v1/history.csv").get_data(as_text=True))))
    assert rows[-1]["outcome"] == "review" and rows[-1]["headline"] == HEADLINE["review"]
    html = borderline_client.get(f"/report/{b['id']}").get_data(as_text=True)
    report = html[html.index('<section class="card report"'):html.index("</section>")]
    assert HEADLINE["review"] in report and 'class="verdict outcome-review"' in report
    assert "No signs" not in report and "\u2713" not in report
    assert "heatmap.png" not in report  # the heatmap follows the page's rule: shown on signs


def test_every_surface_of_one_band_record_says_review(borderline_client, borderline_model,
                                                      tmp_path):
    """Page data, CSV row, report, Secondary Capture text and `pneumo predict`'s output, all
    from one record in the review band (pneumo.app.pipeline.wording words every one of them)."""
    from pneumo.app.dicom.send import result_lines
    from pneumo.app.runtime.batch import run_batch

    b = _post(borderline_client, XRAY_NORMAL.read_bytes(), mode="screening").get_json()
    rec = borderline_client.get(f"/api/v1/history/{b['id']}").get_json()
    surfaces = {"page data": b["headline"], "history list": rec["short"]}
    rows = list(csv.DictReader(io.StringIO(
        borderline_client.get("/api/v1/history.csv").data.decode("utf-8-sig"))))
    row = next(r for r in rows if r["id"] == b["id"])
    surfaces["CSV row"] = row["outcome"] + " " + row["headline"]
    html = borderline_client.get(f"/report/{b['id']}").get_data(as_text=True)
    surfaces["report"] = html[html.index('<section class="card report"'):html.index("</section>")]
    surfaces["Secondary Capture"] = " / ".join(result_lines(rec))
    out, err = io.StringIO(), io.StringIO()
    path = tmp_path / XRAY_NORMAL.name
    path.write_bytes(XRAY_NORMAL.read_bytes())
    assert run_batch([str(path)], model_path=str(borderline_model.path), out=out, err=err) == 0
    printed = json.loads(out.getvalue().splitlines()[0])
    assert printed["outcome"] == "review"
    surfaces["pneumo predict"] = printed["headline"] + " " + err.getvalue()
    for name, shown in surfaces.items():
        assert ("Unclear" in shown or "review" in shown.lower()), name
        assert "No signs" not in shown and "\u2713" not in shown, name
    assert "Label for systems: PNEUMONIA (screening setting" in surfaces["Secondary Capture"]


def test_clear_report_is_no_signs(client):
    b = _post(client, XRAY_NORMAL.read_bytes()).get_json()
    assert b["outcome"] == "no_signs"  # the bundled model is sure about this fixture
    report = client.get(f"/report/{b['id']}").get_data(as_text=True)
    assert HEADLINE["no_signs"] in report and 'outcome-no_signs' in report
    assert HEADLINE["review"] not in report


def test_page_draws_the_outcome_from_the_answer(client):
    html = client.get("/").get_data(as_text=True)
    assert 'id="r-notes"' in html and 'id="mode"' not in html  # no setting on the nurse's form
    js = client.get("/static/app.js").get_data(as_text=True)
    assert '"verdict outcome-" + (r.outcome' in js and "r.icon" in js
    assert 'r.label === "PNEUMONIA"' not in js  # the page never decides from the label


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
