"""pneumo/app/pipeline/predictor.py: one prediction start to end (used by the API and the batch command)."""

import pytest
from apptools import XRAY_NORMAL, noise_png

from pneumo.app.pipeline.checks import NotAChestXray
from pneumo.app.pipeline.predictor import (
    BadMode,
    Predictor,
    calibration_source,
)


def test_calibration_source(model, monkeypatch):
    assert calibration_source(model) in (None, "external validation images",
                                         "validation images")
    cls = type(model)
    monkeypatch.setattr(cls, "calibration", property(lambda self: None))
    assert calibration_source(model) is None
    monkeypatch.setattr(cls, "calibration", property(lambda self: {"method": "none"}))
    assert calibration_source(model) is None
    monkeypatch.setattr(cls, "calibration", property(
        lambda self: {"method": "platt", "a": 1.0, "b": 0.0}))
    monkeypatch.setitem(model.metadata, "operating_points_source", "internal validation split")
    assert calibration_source(model) == "validation images"
    monkeypatch.setitem(model.metadata, "operating_points_source",
                        "external validation (half of the official test split)")
    assert calibration_source(model) == "external validation images"
    p = Predictor(model)
    res = p.predict(XRAY_NORMAL.read_bytes(), heatmap=False)
    j = res.to_json()
    assert j["calibrated"] is True and j["calibrated_on"] == "external validation images"
    assert "Estimated chance of pneumonia signs" in j["message"]
    assert j["probability_text"] in j["message"] and j["headline"] in j["message"]


def test_predict_reads_everything_from_the_model(model):
    p = Predictor(model)
    assert p.modes == list(model.thresholds)
    res = p.predict(XRAY_NORMAL.read_bytes(), "balanced", heatmap=False)
    assert res.heatmap_png is None and res.preview_png is None
    assert res.threshold == model.thresholds["balanced"]
    assert res.model_version == model.version and res.model_sha256 == model.sha256
    assert res.label == model.label_for(res.probability, "balanced")[0]
    assert set(res.timings_ms) >= {"decode", "checks", "preprocess", "inference", "total"}
    j = res.to_json()
    assert j["intended_use"] and j["input"]["width"] == 224
    assert j["calibrated"] is (model.calibration is not None) or model.calibration == {
        "method": "none"}
    assert j["next_steps"] and j["headline"] and j["probability_text"]


def test_predict_refusals(model):
    p = Predictor(model)
    with pytest.raises(BadMode):  # checked once, at the edge
        p.check_mode("fast")
    with pytest.raises(KeyError):  # past the edge an unknown setting is a caller's bug
        p.predict(XRAY_NORMAL.read_bytes(), "fast")
    with pytest.raises(NotAChestXray) as exc:
        p.predict(noise_png())
    assert exc.value.status == 422 and exc.value.reasons[0].code == "noise_image"


def test_ood_rejection_uses_model_thresholds(model, monkeypatch):
    p = Predictor(model)
    monkeypatch.setattr(type(model), "ood", property(lambda self: {"reject_distance": -1.0}))
    with pytest.raises(NotAChestXray) as exc:
        p.predict(XRAY_NORMAL.read_bytes())
    assert exc.value.reasons[0].code == "out_of_distribution"
