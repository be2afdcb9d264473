"""The three outcomes of an answer, decided once: `decide(probability, thresholds, setting)`.

What a person reads depends on the calibrated probability and the thresholds in use (the
model's, or this clinic's), never on the setting:

- ``pneumonia``: at or above the balanced threshold: "Signs of pneumonia likely";
- ``review``: from the review floor (the screening threshold) up to the balanced threshold:
  "Unclear: a clinician should review this X-ray";
- ``no_signs``: below the review floor: "No signs of pneumonia detected".

**The safety rule:** no image at or above the review floor is ever presented as "no signs",
whatever the setting. The setting ("balanced" or "screening") decides only how the review
band is counted in the binary ``label`` that scripts, the CSV and the PACS read: balanced
counts it NORMAL, screening PNEUMONIA (``label`` is PNEUMONIA exactly when the probability
is at or above the setting's threshold). A clinic may raise its review floor only through a
threshold proposal that passes the guard rail of `pneumo.app.clinic.site_thresholds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pneumo.app.config import DEFAULT_SETTING

PNEUMONIA = "pneumonia"
REVIEW = "review"
NO_SIGNS = "no_signs"
OUTCOMES = (PNEUMONIA, REVIEW, NO_SIGNS)
"""Every outcome, the most urgent first."""

CONFIDENCE = {PNEUMONIA: "clear", REVIEW: "borderline", NO_SIGNS: "clear"}
"""The older API field ``confidence`` ("borderline" exactly in the review band)."""


@dataclass(frozen=True)
class Decision:
    """An answer's outcome, its binary label for scripts, and the thresholds behind them."""

    outcome: str
    label: str
    threshold: float  # the setting's threshold (the label's cut-off)
    review_floor: float
    balanced: float

    @property
    def confidence(self) -> str:
        """'borderline' in the review band, else 'clear' (kept for API compatibility)."""
        return CONFIDENCE[self.outcome]


def review_band(thresholds: dict[str, float]) -> tuple[float, float]:
    """(review floor, balanced threshold): the band where a clinician's review is asked."""
    top = float(thresholds.get("balanced", thresholds.get("screening", 0.5)))
    floor = float(thresholds.get("screening", top))
    return min(floor, top), max(floor, top)


def in_review_band(probability: float, thresholds: dict[str, float]) -> bool:
    """True from the review floor up to (not including) the balanced threshold."""
    floor, top = review_band(thresholds)
    return floor <= float(probability) < top


def decide(probability: float, thresholds: dict[str, float], setting: str = DEFAULT_SETTING,
           class_names: Sequence[str] = ("NORMAL", "PNEUMONIA")) -> Decision:
    """The outcome and binary label of a calibrated probability; KeyError for an unknown setting."""
    if setting not in thresholds:
        raise KeyError(setting)
    p = float(probability)
    floor, top = review_band(thresholds)
    outcome = PNEUMONIA if p >= top else REVIEW if p >= floor else NO_SIGNS
    threshold = float(thresholds[setting])
    label = class_names[1] if p >= threshold else class_names[0]
    return Decision(outcome=outcome, label=label, threshold=threshold, review_floor=floor,
                    balanced=top)


def stored_outcome(record: dict, positive: str = "PNEUMONIA") -> str:
    """A history record's outcome: the stored one, else what its older fields showed.

    Records made before the outcome was stored carry ``confidence``: "borderline" was the
    same band (screening <= p < balanced), so it maps to review; the others follow the label.
    """
    if record.get("outcome") in OUTCOMES:
        return str(record["outcome"])
    if record.get("confidence") == "borderline":
        return REVIEW
    return PNEUMONIA if record.get("label") == positive else NO_SIGNS
