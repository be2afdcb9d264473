"""edge_app/predictor.py: one prediction start to end (used by the API and the batch command)."""

import pytest
from apptools import XRAY_NORMAL, noise_png

from edge_app.checks import NotAChestXray
from edge_app.predictor import (
    GUIDANCE_LABEL,
    NEXT_STEP_BORDERLINE,
    NEXT_STEP_NEGATIVE,
    NEXT_STEP_POSITIVE,
    NEXT_STEP_RETAKE,
    BadMode,
    Predictor,
    calibration_source,
    headline,
    next_steps,
    plain_message,
    probability_text,
)


def test_plain_message_never_claims_certainty():
    assert "over 99" in plain_message("PNEUMONIA", 0.9999, 0.64, "PNEUMONIA")
    assert "under 1" in plain_message("NORMAL", 0.0001, 0.64, "PNEUMONIA")
    assert "over 99%" in plain_message("PNEUMONIA", 0.9999, 0.64, "PNEUMONIA", "x")


def test_plain_message():
    assert plain_message("PNEUMONIA", 0.93, 0.76, "PNEUMONIA").startswith(
        "Signs of pneumonia likely \u2014 model score 93 out of 100")
    assert plain_message("NORMAL", 0.12, 0.76, "PNEUMONIA").startswith(
        "No signs of pneumonia detected")
    close = plain_message("NORMAL", 0.755, 0.7575, "PNEUMONIA")
    assert "75.5" in close and "threshold" not in close  # no "76 below 76"; no threshold


def test_plain_words_say_what_the_number_is():
    score = plain_message("NORMAL", 0.12, 0.6, "PNEUMONIA")
    assert "model score 12 out of 100 (a score, not a chance of disease)" in score
    assert "%" not in score and "chance of pneumonia" not in score
    chance = plain_message("PNEUMONIA", 0.72, 0.6, "PNEUMONIA", "external validation images")
    assert ("estimated chance of pneumonia signs: 72% (calibrated on external validation "
            "images)") in chance
    assert headline("NORMAL", "PNEUMONIA", "borderline") == (
        "No signs of pneumonia detected (borderline)")
    assert probability_text(0.5, 0.6, None).startswith("model score 50")


def test_next_steps_per_outcome():
    assert next_steps("PNEUMONIA", "clear", []) == [NEXT_STEP_POSITIVE]
    assert next_steps("NORMAL", "clear", []) == [NEXT_STEP_NEGATIVE]
    assert "referral" in NEXT_STEP_POSITIVE and "local protocol" in NEXT_STEP_POSITIVE
    assert "does not rule it out" in NEXT_STEP_NEGATIVE
    border = next_steps("NORMAL", "borderline", [])
    assert border[0] == NEXT_STEP_BORDERLINE and "clinician should review" in border[0]
    assert next_steps("NORMAL", "clear", ["noisy"])[-1] == NEXT_STEP_RETAKE
    assert "retak" in NEXT_STEP_RETAKE
    for info in ("rescaled_bit_depth", "decoder_note", "dicom_modality_missing"):
        assert NEXT_STEP_RETAKE not in next_steps("NORMAL", "clear", [info])
    assert "guidance, not a protocol" in GUIDANCE_LABEL


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
    assert "estimated chance of pneumonia signs" in j["message"]
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
