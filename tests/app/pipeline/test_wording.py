"""pneumo/app/pipeline/wording.py: every answer a person reads, from the stored record."""

from pneumo.app.i18n import english
from pneumo.app.pipeline.wording import (
    GUIDANCE_LABEL,
    HEADLINE,
    ICON,
    NEXT_STEP,
    NEXT_STEP_RETAKE,
    answer,
    chance_at_share,
    probability_text,
)


def record(outcome: str, p: float, **extra) -> dict:
    """A stored record of the given outcome (the fields wording reads)."""
    return {"outcome": outcome, "probability": p, "calibrated": True, "label": "NORMAL",
            "warnings": [], **extra}


def test_each_outcome_has_its_own_words_and_sign():
    with english():
        heads = {o: answer(record(o, 0.5))["headline"] for o in HEADLINE}
    assert heads == {"pneumonia": "Signs of pneumonia likely",
                     "review": "Unclear: a clinician should review this X-ray",
                     "no_signs": "No signs of pneumonia detected"}
    assert len(set(ICON.values())) == 3 and ICON["no_signs"] == "\u2713"
    assert ICON["review"] != ICON["no_signs"]  # never a tick for an unclear answer


def test_the_number_says_what_it_is_and_never_claims_certainty():
    with english():
        assert probability_text(0.72, True) == "Estimated chance of pneumonia signs: 72%"
        assert "over 99%" in probability_text(0.9999, True)
        assert "under 1%" in probability_text(0.0001, True)
        score = probability_text(0.12, False)
    assert score == "Model score 12 out of 100 (a score, not a chance of disease)"
    assert "calibrated" not in probability_text(0.5, True)  # technical words stay in details


def test_one_next_step_per_outcome_and_a_retake_line():
    with english():
        for outcome, step in NEXT_STEP.items():
            assert answer(record(outcome, 0.4))["next_steps"] == [step]
        noisy = answer(record("no_signs", 0.1, warnings=[{"code": "noisy"}]))["next_steps"]
        info = answer(record("no_signs", 0.1, warnings=[{"code": "decoder_note"}]))
    assert noisy[-1] == NEXT_STEP_RETAKE and info["next_steps"] == [NEXT_STEP["no_signs"]]
    assert "referral" in NEXT_STEP["pneumonia"] and "clinician should review" in NEXT_STEP["review"]
    assert "does not rule it out" in NEXT_STEP["no_signs"]
    assert "guidance, not a protocol" in GUIDANCE_LABEL


def test_notes_say_clinic_thresholds_and_drift_in_the_main_text():
    with english():
        words = answer(record("review", 0.4, threshold_source="site",
                              site_thresholds_at="2026-11-30T10:00:00Z", drift=True))
    assert any("Thresholds set for this clinic on" in n and "2026" in n for n in words["notes"])
    assert any(n.startswith("Recent images differ") for n in words["notes"])
    with english():
        plain = answer(record("review", 0.4))
    assert plain["notes"] == []


def test_old_records_get_the_outcome_they_showed():
    with english():
        old_band = answer({"probability": 0.5, "confidence": "borderline", "label": "NORMAL"})
        old_pos = answer({"probability": 0.9, "confidence": "clear", "label": "PNEUMONIA"})
        old_neg = answer({"probability": 0.1, "confidence": "clear", "label": "NORMAL"})
    assert (old_band["outcome"], old_pos["outcome"], old_neg["outcome"]) == (
        "review", "pneumonia", "no_signs")
    assert old_band["headline"] == HEADLINE["review"]


def test_chance_at_another_share_follows_bayes():
    assert abs(chance_at_share(0.625, 0.625, 0.625) - 0.625) < 1e-9
    lower = chance_at_share(0.56, 0.2, 0.625)
    odds = 0.56 / 0.44 * (0.2 / 0.8) / (0.625 / 0.375)
    assert abs(lower - odds / (1 + odds)) < 1e-12 and lower < 0.56
