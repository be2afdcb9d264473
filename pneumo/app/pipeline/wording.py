"""Every answer a person reads, worded once from the stored record.

The page (through the API's answer), the history list, the printable report, the Secondary
Capture sent to the PACS, the CSV and `pneumo predict` all take their words from `answer`,
which reads only the record's stored fields: a reprinted old report says what was shown when
it was made. The outcome itself is decided by `pneumo.app.pipeline.outcome.decide`.
"""

from __future__ import annotations

from datetime import datetime

from pneumo.app.i18n import N_, _, current, number, percent
from pneumo.app.pipeline.outcome import NO_SIGNS, PNEUMONIA, REVIEW, stored_outcome

HEADLINE = {
    PNEUMONIA: N_("Signs of pneumonia likely"),
    REVIEW: N_("Unclear: a clinician should review this X-ray"),
    NO_SIGNS: N_("No signs of pneumonia detected"),
}
"""The outcome in a few words: the first thing a nurse reads."""

SHORT = {PNEUMONIA: N_("Signs of pneumonia likely"), REVIEW: N_("Unclear: review"),
         NO_SIGNS: N_("No signs detected")}
"""The outcome in the history list."""

ICON = {PNEUMONIA: "!", REVIEW: "?", NO_SIGNS: "\u2713"}
"""Each outcome's own sign (inside its own shape on the page), so that the outcome survives a
black-and-white printer and colour-blind readers: never a tick for anything but no signs."""

NEXT_STEP = {
    PNEUMONIA: N_("Assess the child clinically and consider referral using the criteria of "
                  "your local protocol."),
    REVIEW: N_("A clinician should review the X-ray and the child before deciding."),
    NO_SIGNS: N_("Clinical judgement still applies: an X-ray without signs of pneumonia "
                 "does not rule it out."),
}
"""The one next step of each outcome (guidance, not a protocol)."""

NEXT_STEP_RETAKE = N_("Consider retaking the X-ray: the image quality warnings make the result "
                      "less reliable.")
RETAKE_WARNINGS = frozenset({
    "low_resolution", "unusual_aspect_ratio", "low_contrast", "noisy", "underexposed",
    "overexposed", "unusual_layout", "unusual_image",
})
"""Image quality warnings that a new X-ray may cure (others only note how it was read)."""

TAIL = {PNEUMONIA: N_("A clinician must confirm."),
        REVIEW: N_("A clinician must review it."),
        NO_SIGNS: N_("This does not rule out disease.")}
"""What the outcome does not mean (the end of the one-line message)."""

GUIDANCE_LABEL = N_("What to do next (guidance, not a protocol)")
"""Heading of the next-steps lines: they support local clinical protocols, never replace them."""

INTENDED_USE = N_(
    "Decision support for pediatric frontal chest X-rays. Not a diagnosis: a clinician must "
    "read the image and decide."
)

DRIFT_NOTE = N_("Recent images differ from those the model was checked on: take extra care "
                "with this result, and ask for the X-ray unit's settings to be checked.")
"""Shown with the answer (and on its report) while the drift check warns."""

SITE_NOTE = N_("Thresholds set for this clinic on %(date)s.")
"""Shown with every answer given with this clinic's thresholds."""

HEATMAP_NOTE = {
    "positive": N_("Shows where the model looked; red marks the areas that weighed most towards "
                   "pneumonia. Not an outline of a lesion."),
    "negative": N_("Shows where the model looked. On a NORMAL result it does not mark disease."),
}
"""Caption of the heatmap: 'positive' only for the pneumonia outcome."""

CLASS_WORDS = {"PNEUMONIA": N_("PNEUMONIA"), "NORMAL": N_("NORMAL")}
"""The model's class names as a person reads them (technical details)."""

CALIBRATION_NOTE = N_("The estimated chance was calibrated on images of which %(share)s show "
                      "pneumonia; where fewer children have pneumonia, the same image's chance "
                      "is lower.")
CLINIC_CHANCE = N_("At this clinic's share of pneumonia (%(share)s): about %(value)s.")


def calibration_share(metadata: dict) -> float | None:
    """The pneumonia share of the images the model's probabilities were calibrated on."""
    ext = metadata.get("external_metrics") or {}
    cal = metadata.get("calibration") or {}
    if not ext.get("n") or "external" not in str(cal.get("fitted_on", "external")).lower():
        return None
    return float(ext["n_pneumonia"]) / float(ext["n"])


def clinic_chance_text(chance: float, share: float) -> str:
    """The chance at this clinic's pneumonia share, in words."""
    return _(CLINIC_CHANCE, share=percent(share), value=_value(chance, 0, True))


def heatmap_shown(outcome: str) -> bool:
    """Whether the heatmap is shown without asking: only with signs of pneumonia (a heatmap on
    another outcome is easily misread as disease; the page shows it on request)."""
    return outcome == PNEUMONIA


def _value(p: float, digits: int, as_percent: bool) -> str:
    """A probability as a number of 100 that never claims certainty ("over 99", "under 1")."""
    fmt = percent if as_percent else (lambda f, d=0: number(100 * f, d))
    if 100 * p >= 99.5:
        return _("over %(value)s", value=fmt(0.99))
    if 100 * p < 0.5:
        return _("under %(value)s", value=fmt(0.01))
    return fmt(p, digits)


def probability_text(probability: float, calibrated: bool) -> str:
    """What the number is: an estimated chance (calibrated) or a model score."""
    if calibrated:
        return _("Estimated chance of pneumonia signs: %(value)s",
                 value=_value(float(probability), 0, True))
    return _("Model score %(value)s out of 100 (a score, not a chance of disease)",
             value=_value(float(probability), 0, False))


def chance_at_share(probability: float, share: float, reference_share: float) -> float:
    """The same image's chance where `share` of children have pneumonia, for a probability
    calibrated where `reference_share` had (Bayes' rule on the odds; the likelihood ratio of
    the image is unchanged)."""
    p = min(max(float(probability), 1e-6), 1 - 1e-6)
    odds = p / (1 - p) * (share / (1 - share)) / (reference_share / (1 - reference_share))
    return odds / (1 + odds)


def local_date(iso: str | None) -> str:
    """The date of an ISO time in the request's language (e.g. '3 Dec 2026')."""
    from babel.dates import format_date

    if not iso:
        return ""
    try:
        when = datetime.fromisoformat(str(iso).replace("Z", "+00:00")).astimezone()
    except ValueError:
        return str(iso)[:10]
    return format_date(when.date(), "medium", locale=current())


def next_steps(outcome: str, warning_codes: list[str]) -> list[str]:
    """The outcome's next step, and a retake line for image quality warnings."""
    steps = [NEXT_STEP[outcome]]
    if any(code in RETAKE_WARNINGS for code in warning_codes):
        steps.append(NEXT_STEP_RETAKE)
    return [_(step) for step in steps]


def notes(record: dict) -> list[str]:
    """Lines shown with the verdict: the clinic's thresholds, the drift warning."""
    out = []
    if record.get("drift"):
        out.append(_(DRIFT_NOTE))
    if record.get("threshold_source") == "site":
        day = local_date(record.get("site_thresholds_at"))
        out.append(_(SITE_NOTE, date=day) if day else _("Thresholds set for this clinic."))
    return out


def answer(record: dict, positive: str = "PNEUMONIA") -> dict:
    """Everything a person reads about one stored answer, in the current language."""
    outcome = stored_outcome(record, positive)
    codes = [w.get("code", "") for w in record.get("warnings") or [] if isinstance(w, dict)]
    chance = probability_text(record["probability"], bool(record.get("calibrated")))
    head = _(HEADLINE[outcome])
    return {
        "outcome": outcome,
        "icon": ICON[outcome],
        "headline": head,
        "short": _(SHORT[outcome]),
        "probability_text": chance,
        "next_steps": next_steps(outcome, codes),
        "notes": notes(record),
        "message": _("%(headline)s — %(number)s. %(tail)s", headline=head, number=chance,
                     tail=_(TAIL[outcome])),
        "heatmap_shown": heatmap_shown(outcome),
        "class_words": _(CLASS_WORDS.get(str(record.get("label")), str(record.get("label")))),
    }
