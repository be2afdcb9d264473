"""The shared prediction pipeline (used by the API and the batch command)."""

import pytest
from apptools import XRAY_NORMAL, noise_png

from edge_app.checks import NotAChestXray
from edge_app.pipeline import BadMode, Predictor, plain_message


def test_plain_message_never_claims_certainty():
    assert "over 99%" in plain_message("PNEUMONIA", 0.9999, 0.64, "PNEUMONIA")
    assert "under 1%" in plain_message("NORMAL", 0.0001, 0.64, "PNEUMONIA")


def test_plain_message():
    assert plain_message("PNEUMONIA", 0.93, 0.76, "PNEUMONIA").startswith(
        "Signs of pneumonia likely \u2014 93%")
    assert plain_message("NORMAL", 0.12, 0.76, "PNEUMONIA").startswith(
        "No signs of pneumonia detected")
    close = plain_message("NORMAL", 0.755, 0.7575, "PNEUMONIA")
    assert "75.5%" in close and "75.8%" in close  # never "76% below 76%"


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


def test_predict_refusals(model):
    p = Predictor(model)
    with pytest.raises(BadMode):
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
