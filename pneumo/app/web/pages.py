"""The server-rendered page (upload, result, history) and a printable report page."""

from __future__ import annotations

from datetime import datetime

from babel.dates import format_datetime
from flask import Blueprint, render_template

from pneumo.app.history.schema import is_record_id
from pneumo.app.i18n import N_, _, current, number, percent, translate
from pneumo.app.pipeline.outcome import OUTCOMES
from pneumo.app.pipeline.wording import (
    CALIBRATION_NOTE,
    CLASS_WORDS,
    GUIDANCE_LABEL,
    HEATMAP_NOTE,
    INTENDED_USE,
    SHORT,
    answer,
    calibration_share,
)
from pneumo.app.updates.model_store import source_text
from pneumo.app.web.errors import ApiError
from pneumo.app.web.security import csrf_token
from pneumo.app.web.site_api import SITE_JS_STRINGS
from pneumo.app.web.state import get_state

bp = Blueprint("pages", __name__)

FINDING_LABELS = (("normal", N_("Normal")), ("pneumonia", N_("Pneumonia")),
                  ("other", N_("Other finding")), ("unknown", N_("Not known yet")))
"""The clinician's findings (history.FINDINGS) as the page words them (English ids)."""

MODE_NAMES = {"balanced": N_("balanced"), "screening": N_("screening")}
"""The settings' short names, in running text."""

JS_STRINGS = {
    "no_file": N_("No file chosen."),
    "file_size": N_("%(name)s (%(size)s kB)"),
    "ref_cleared": N_("The patient reference \u201c%(ref)s\u201d of the previous X-ray was cleared."),
    "request_failed": N_("The request failed."),
    "other_reasons": N_("Other reasons:"),
    "fix_rotate_180": N_("Rotate and analyse"),
    "fix_flip_vertical": N_("Flip top to bottom and analyse"),
    "fix_flip_horizontal": N_("Mirror and analyse"),
    "unreachable": N_("Could not reach the app. Is it still running?"),
    "server_answered": N_("The server answered %(status)s."),
    "mode_line": N_("%(mode)s: threshold %(threshold)s, model output %(output)s"),
    "mode_line_calibrated": N_("%(mode)s: threshold %(threshold)s, model output %(output)s "
                               "(calibrated)"),
    "bits": N_("%(bits)s-bit"),
    "saved": N_("Saved: %(finding)s."),
    "saved_by": N_("Saved: %(finding)s, by %(by)s."),
    "saved_at": N_("Saved: %(finding)s, %(time)s."),
    "saved_by_at": N_("Saved: %(finding)s, by %(by)s, %(time)s."),
    "choose_finding": N_("Choose a finding first."),
    "shown_in": N_("%(iso)s (UTC); shown in %(zone)s"),
    "site_in_use": N_("In use: thresholds set for this clinic on %(time)s from %(count)s "
                      "confirmed cases: balanced %(balanced)s, screening %(screening)s."),
    "site_in_use_by": N_("In use: thresholds set for this clinic on %(time)s from %(count)s "
                         "confirmed cases (accepted by %(by)s): balanced %(balanced)s, screening "
                         "%(screening)s."),
    "model_in_use": N_("In use: the model's default thresholds (balanced %(balanced)s, "
                       "screening %(screening)s)."),
    "confirmed_so_far": N_("Confirmed so far with this model: %(normal)s normal, %(pneumonia)s "
                           "pneumonia."),
    "threshold_model": N_("The model (default thresholds)"),
    "threshold_site": N_("This clinic (site thresholds)"),
    "threshold_site_on": N_("This clinic: set on %(time)s from %(count)s confirmed cases"),
    "one_minus_specificity": N_("1 − specificity"),
    "sensitivity_axis": N_("sensitivity"),
    "summary": N_("From %(count)s confirmed cases (%(normal)s normal, %(pneumonia)s pneumonia). "
                  "How well the model's estimate separates them here (AUC): %(auc)s."),
    "now": N_("now"),
    "proposed": N_("proposed"),
    "row_name": N_("%(mode)s — %(which)s"),
    "point": N_("%(mode)s %(which)s: sensitivity %(sensitivity)s, specificity %(specificity)s"),
    "expect": N_("On new patients expect about: balanced sensitivity %(bs)s, specificity %(bsp)s; "
                 "screening sensitivity %(ss)s, specificity %(ssp)s (thresholds chosen on half of "
                 "the cases, checked on the other half). Red: now; green: proposed."),
    "score": N_("score %(value)s"),
    "finding_for": N_("Clinician's finding for %(what)s, %(time)s"),
    "this_result": N_("this result"),
    "not_recorded": N_("— not recorded"),
    "no_results": N_("No results yet."),
    "by_dicom": N_("%(name)s (received by DICOM)"),
    "report": N_("Report"),
    "page_of": N_("Page %(page)s of %(pages)s (%(total)s results)"),
    **{f"label_{name}": words for name, words in CLASS_WORDS.items()},
    **{f"outcome_{name}": SHORT[name] for name in OUTCOMES},
}
"""Texts app.js shows, rendered into the page as JSON (``%(name)s`` placeholders)."""



def _context() -> dict:
    st = get_state()
    m = st.model
    thresholds = ", ".join(f"{_(MODE_NAMES.get(n, n))} {percent(t)}" for n, t in m.thresholds.items())
    return {
        "model": {"name": m.name, "version": m.version, "sha256": m.sha256,
                  "thresholds": m.thresholds, "input_size": m.input_size},
        "model_card": m.model_card,
        "calibrated_on": _(st.predictor.calibrated_on) if st.predictor.calibrated_on else None,
        "intended_use": _(INTENDED_USE),
        "calibration_note": _calibration_note(m),
        "guidance_label": _(GUIDANCE_LABEL),
        "heatmap_note": {k: _(v) for k, v in HEATMAP_NOTE.items()},
        "clinic_name": st.config["clinic_name"],
        "model_source_words": source_text(st.config.get("model_source")),
        "allow_shutdown": bool(st.config.get("allow_shutdown")),
        "max_upload_mb": number(round(st.config["max_upload_bytes"] / 2**20)),
        "findings": [(k, _(v)) for k, v in FINDING_LABELS],
        "threshold_list": thresholds + ".",
        "js_strings": js_strings(),
    }


def _calibration_note(model) -> str | None:
    """What the estimated chance is relative to (the calibration set's share of pneumonia)."""
    share = calibration_share(model.metadata) if model.calibration else None
    return None if share is None else _(CALIBRATION_NOTE, share=percent(share, 1))


def local_text(iso: str | None) -> str:
    """An ISO 8601 UTC time as this computer's local time, in the request's language, with
    its zone (the page's script shows it in the reader's own zone)."""
    if not iso:
        return ""
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return iso
    return format_datetime(when, "medium", tzinfo=when.tzinfo, locale=current()) + " " + \
        (when.tzname() or "")


def js_strings() -> dict[str, str]:
    """The texts of app.js in the request's language (and the language for Intl formats)."""
    out = {key: _(text) for key, text in {**JS_STRINGS, **SITE_JS_STRINGS}.items()}
    out.update({f"mode_{k}": _(v) for k, v in MODE_NAMES.items()})
    out["locale"] = current()
    return out


@bp.get("/")
def index() -> str:
    """The main page."""
    return render_template("index.html", csrf=csrf_token(), **_context())


@bp.get("/report/<record_id>")
def report(record_id: str) -> str:
    """A printable report of one history record."""
    st = get_state()
    rec = st.history.get(record_id) if is_record_id(record_id) else None
    if rec is None:
        raise ApiError(404, "not_found", N_("No such history record."))
    words = answer(rec, st.model.class_names[1])
    words.update(
        warnings=[translate(w.get("message", "")) for w in rec["warnings"]],
        created_at=local_text(rec["created_at"]),
        finding_at=local_text(rec.get("finding_at")),
        setting=_(JS_STRINGS["mode_line_calibrated" if rec["calibrated"] else "mode_line"],
                  mode=_(MODE_NAMES.get(rec["mode"], rec["mode"])),
                  threshold=number(rec["threshold"], 3), output=number(rec["probability"], 3)))
    finding = dict(FINDING_LABELS).get(rec["finding"] or "", "")
    return render_template("report.html", rec=rec, words=words,
                           finding_label=_(finding) if finding else "", **_context())
