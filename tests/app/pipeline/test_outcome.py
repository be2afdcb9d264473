"""pneumo/app/pipeline/outcome.py: the three outcomes, decided once, and the safety rule."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pneumo.app.pipeline.outcome import (
    NO_SIGNS,
    PNEUMONIA,
    REVIEW,
    decide,
    in_review_band,
    stored_outcome,
)

T = {"balanced": 0.58, "screening": 0.29}


def test_the_three_outcomes_and_the_label_per_setting():
    assert decide(0.9, T).outcome == PNEUMONIA
    assert decide(0.58, T).outcome == PNEUMONIA  # at the balanced threshold: signs
    assert decide(0.29, T).outcome == REVIEW  # at the review floor: review
    assert decide(0.5, T).outcome == REVIEW
    assert decide(0.2899, T).outcome == NO_SIGNS
    # the setting moves the band's binary label only
    assert decide(0.5, T, "balanced").label == "NORMAL"
    assert decide(0.5, T, "screening").label == "PNEUMONIA"
    assert decide(0.5, T, "screening").threshold == 0.29
    with pytest.raises(KeyError):
        decide(0.5, T, "other")


@given(p=st.floats(0, 1), a=st.floats(0.01, 0.99), b=st.floats(0.01, 0.99),
       setting=st.sampled_from(["balanced", "screening"]))
def test_safety_rule_nothing_at_or_above_the_floor_is_no_signs(p, a, b, setting):
    thresholds = {"balanced": a, "screening": b}
    d = decide(p, thresholds, setting)
    floor = min(a, b)
    assert (d.outcome == NO_SIGNS) == (p < floor)
    assert d.outcome == decide(p, thresholds, "balanced" if setting == "screening"
                               else "screening").outcome  # the same words in both settings
    assert in_review_band(p, thresholds) == (d.outcome == REVIEW)
    assert (d.label == "PNEUMONIA") == (p >= thresholds[setting])


def test_stored_outcome_prefers_the_stored_field():
    assert stored_outcome({"outcome": "review", "label": "PNEUMONIA"}) == REVIEW
    assert stored_outcome({"confidence": "borderline", "label": "PNEUMONIA"}) == REVIEW
    assert stored_outcome({"confidence": None, "label": "PNEUMONIA"}) == PNEUMONIA
    assert stored_outcome({"label": "NORMAL"}) == NO_SIGNS
