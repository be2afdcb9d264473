"""The clinic's own cases in the JSON API (v1): confirmed findings, site thresholds, drift.

- ``PUT /api/v1/history/<id>/confirmation``: the clinician's final finding (audited);
- ``GET /api/v1/audit``: the append-only audit trail;
- ``POST /api/v1/calibration/proposal``, ``POST /api/v1/calibration``,
  ``GET /api/v1/calibration``, ``DELETE /api/v1/calibration``: this clinic's thresholds;
- ``GET /api/v1/status``: model, thresholds in use, drift check.
"""

from __future__ import annotations

import logging

import numpy as np
from flask import Blueprint, Response, jsonify, request

from pneumo.app import bounded_json
from pneumo.app.analysis import AppState, drift_state, model_thresholds, site_thresholds
from pneumo.app.clinic.site_profile import (
    MAX_OVERRIDE_BY,
    MAX_OVERRIDE_REASON,
    accept,
    check_override,
)
from pneumo.app.clinic.site_thresholds import (
    NEEDED_PNEUMONIAS,
    GuardRailBlocked,
    TooFewCases,
    check_prevalence,
    propose,
)
from pneumo.app.config import clean_text
from pneumo.app.history.schema import FINDINGS, utc_now_iso
from pneumo.app.i18n import N_, _
from pneumo.app.web.api import API_VERSION, public_record, record_or_404
from pneumo.app.web.errors import ApiError
from pneumo.app.web.state import get_state

MAX_NOTE = 500
MAX_BY = 64
MAX_JSON_BODY = 64 * 1024
"""Bytes of a JSON request body (a confirmation or an accept with an override: under 2 kB)."""

log = logging.getLogger(__name__)

bp = Blueprint("site", __name__, url_prefix=f"/api/{API_VERSION}")
"""Confirmations, audit, site thresholds and status; under /api/v1 like the rest."""

SITE_JS_STRINGS = {
    "guard_lowers": N_("%(mode)s: the threshold goes down (%(current)s to %(proposed)s), so "
                       "more children are called pneumonia. Allowed."),
    "guard_unchanged": N_("%(mode)s: the threshold stays at %(proposed)s. Allowed."),
    "guard_passes": N_("%(mode)s: the threshold goes up (%(current)s to %(proposed)s). Checked on "
                       "%(has)s confirmed pneumonias (%(missed)s missed with thresholds chosen "
                       "on the other half of the cases): sensitivity is at least %(bound)s "
                       "(%(level)s confidence), which meets the rule of %(rule)s. Allowed."),
    "guard_too_few": N_("%(mode)s: the threshold goes up (%(current)s to %(proposed)s). Blocked: "
                        "to show that sensitivity stays at %(rule)s or more, the app needs at "
                        "least %(needed)s confirmed pneumonias, even with none missed. This "
                        "clinic has %(has)s."),
    "guard_below": N_("%(mode)s: the threshold goes up (%(current)s to %(proposed)s). Blocked: of "
                      "%(has)s confirmed pneumonias, %(missed)s were missed with thresholds "
                      "chosen on the other half of the cases, so sensitivity could be as low "
                      "as %(bound)s (%(level)s confidence), below the rule of %(rule)s."),
    "per100_caption": N_("Expected per 100 children X-rayed, if %(share)s of them have pneumonia "
                         "(%(source)s)"),
    "share_confirmed": N_("the share among the confirmed cases"),
    "share_entered": N_("the share you entered"),
    "share_bad": N_("Enter a number above 0 and below 100."),
    "override_missing": N_("Write a reason and your initials first."),
    "needs_line": N_("A threshold can go up with one click only when enough pneumonias are "
                     "confirmed: at least %(balanced)s for the balanced setting and "
                     "%(screening)s for screening, even with none missed."),
    "site_override": N_("Accepted with an override by %(by)s: \u201c%(reason)s\u201d."),
}
"""Texts of the clinic lead's section of app.js (``%(name)s`` placeholders), rendered into
the page with the page's own (pneumo.app.web.pages.js_strings)."""


NOT_A_JSON_OBJECT = N_("Send a JSON object (Content-Type: application/json).")


def _too_complex() -> ApiError:
    """The `bad_json` refusal of a body over MAX_JSON_BODY or nested over MAX_DEPTH."""
    return ApiError(400, "bad_json", _(
        "The request is too large or too deeply nested: send a JSON object of at most "
        "%(size)s kB, nested at most %(depth)s levels deep.", size=MAX_JSON_BODY // 1024,
        depth=bounded_json.MAX_DEPTH))


def _read_body(limit: int) -> bytes:
    """At most limit + 1 bytes of the request body (a longer one is never read whole)."""
    chunks, size = [], 0
    while size <= limit:
        chunk = request.stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _json_body() -> dict:
    """The request's JSON object, parsed within bounds (400 `bad_json` when not one)."""
    if not request.is_json:
        raise ApiError(400, "bad_json", NOT_A_JSON_OBJECT)
    if (request.content_length or 0) > MAX_JSON_BODY:
        raise _too_complex()
    try:
        body = bounded_json.loads(_read_body(MAX_JSON_BODY), max_bytes=MAX_JSON_BODY)
    except bounded_json.BadJson as exc:
        if exc.reason == "invalid":
            raise ApiError(400, "bad_json", NOT_A_JSON_OBJECT) from exc
        log.info("JSON body refused on %s: %s", request.path, exc)
        raise _too_complex() from exc
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", NOT_A_JSON_OBJECT)
    return body


def _text(body: dict, key: str, limit: int) -> str | None:
    """An optional text field, cleaned of control characters, at most `limit` characters."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"bad_{key}", _("'%(name)s' must be text.", name=key))
    value = clean_text(value)
    if len(value) > limit:
        raise ApiError(400, f"bad_{key}", _("'%(name)s' is longer than %(limit)s characters.",
                                            name=key, limit=limit))
    return value or None


@bp.put("/history/<record_id>/confirmation")
def confirm(record_id: str) -> Response:
    """Record (or change) the clinician's confirmed finding of one result."""
    record_or_404(record_id)
    body = _json_body()
    finding = body.get("finding")
    if not isinstance(finding, str) or finding.strip().lower() not in FINDINGS:
        raise ApiError(400, "bad_finding", _("The finding must be one of: %(findings)s.",
                                             findings=", ".join(FINDINGS)))
    rec = get_state().history.set_finding(record_id, finding.strip().lower(),
                                          _text(body, "note", MAX_NOTE), _text(body, "by", MAX_BY))
    if rec is None:
        raise ApiError(404, "not_found", N_("No such history record."))
    return jsonify(public_record(rec))


@bp.get("/audit")
def audit() -> Response:
    """The audit trail, oldest first (optionally ?record_id=...)."""
    record_id = request.args.get("record_id") or None
    return jsonify({"items": get_state().history.audit(record_id=record_id)})


def _latest_per_image(cases: list[dict]) -> list[dict]:
    """One confirmed case per image (the newest record of each sha256)."""
    by_image: dict[str, dict] = {}
    for rec in cases:  # oldest first: later ones replace earlier
        by_image[rec["sha256"]] = rec
    return list(by_image.values())


def site_thresholds_state(st: AppState) -> dict:
    """Which thresholds answers use now, and why (also shown on the page)."""
    site = site_thresholds(st)
    profile = st.site.profile
    out = {"source": "site" if site else "model",
           "thresholds": site or model_thresholds(st),
           "model_thresholds": model_thresholds(st),
           "profile": profile if site else None,
           "warning": None}
    if profile is not None and site is None:
        out["warning"] = _("This clinic's thresholds were set for another model (sha256 "
                           "%(sha)s...), so the model's own thresholds are used. Confirm results "
                           "and set them again for this model.",
                           sha=str(profile.get("model_sha256"))[:12])
        out["stale_profile"] = profile
    counts = {"normal": 0, "pneumonia": 0}
    for rec in _latest_per_image(st.history.confirmed(st.model.sha256)):
        counts[rec["finding"]] += 1
    out["confirmed_cases"] = counts
    out["min_cases_per_class"] = st.config["site_min_cases"]
    # a raise by one click needs this many confirmed pneumonias at least (none missed)
    out["needed_pneumonias"] = dict(NEEDED_PNEUMONIAS)
    out["created_at"] = profile.get("created_at") if site and profile else None  # accepted on
    out["prevalence"] = st.site.prevalence_for(st.model.sha256) if site else None
    return out


@bp.get("/calibration")
def site_thresholds_get() -> Response:
    """The thresholds in use: this clinic's (source 'site') or the model's (source 'model')."""
    return jsonify(site_thresholds_state(get_state()))


@bp.post("/calibration/proposal")
def site_thresholds_proposal() -> Response:
    """Propose thresholds from the confirmed normal/pneumonia cases of the loaded model.

    Optional ``prevalence`` (0 < share < 1): the clinic's pneumonia share for the figures per
    100 children (default: the share among the confirmed cases).
    """
    body = _json_body()  # may be {}
    try:
        prevalence = check_prevalence(body.get("prevalence"))
    except ValueError as exc:
        raise ApiError(400, "bad_prevalence", N_(
            "The pneumonia share must be a number above 0 and below 1 (for example 0.3 for 30 "
            "children in 100).")) from exc
    st = get_state()
    cases = _latest_per_image(st.history.confirmed(st.model.sha256))
    y = np.array([1 if r["finding"] == "pneumonia" else 0 for r in cases], dtype=int)
    p = np.array([float(r["probability"]) for r in cases])
    try:
        proposal = propose(y, p, site_thresholds(st) or model_thresholds(st),
                           minimum=st.config["site_min_cases"], prevalence=prevalence)
    except TooFewCases as exc:
        raise ApiError(422, "too_few_cases", _(
            "A proposal needs at least %(minimum)s confirmed NORMAL and %(minimum)s confirmed "
            "PNEUMONIA cases analysed by this model; there are %(normal)s NORMAL and "
            "%(pneumonia)s PNEUMONIA. Confirm more results and try again.",
            minimum=exc.minimum, normal=exc.n_normal, pneumonia=exc.n_pneumonia),
                       n={"normal": exc.n_normal, "pneumonia": exc.n_pneumonia},
                       minimum=exc.minimum) from exc
    proposal.update(created_at=utc_now_iso(), model_sha256=st.model.sha256,
                    model_version=st.model.version,
                    current_source="site" if site_thresholds(st) else "model",
                    cases_from="confirmed results in this app's history")
    return jsonify(st.site_proposals.add(proposal))


def _override(body: dict) -> dict | None:
    """The optional ``override`` {reason, by} of an accept (400 when given but incomplete)."""
    value = body.get("override")
    if value is None:
        return None
    reason = value.get("reason") if isinstance(value, dict) else None
    by = value.get("by") if isinstance(value, dict) else None
    try:
        return check_override(reason, by)
    except ValueError as exc:
        raise ApiError(400, "bad_override", _(
            "An override needs a reason (at most %(reason)s characters) and the initials of the "
            "person who decides (at most %(by)s characters).",
            reason=MAX_OVERRIDE_REASON, by=MAX_OVERRIDE_BY), field=str(exc)) from exc


@bp.post("/calibration")
def site_thresholds_accept() -> Response:
    """Accept a proposal: its thresholds become this clinic's (saved, audited).

    A proposal the guard rail blocks (it raises a threshold without enough confirmed
    pneumonias) is refused (409 ``guard_rail``) unless the body carries
    ``override: {"reason": ..., "by": initials}``, which the audit trail keeps.
    """
    body = _json_body()
    override = _override(body)
    st = get_state()
    proposal_id = body.get("proposal_id")
    proposal = st.site_proposals.get(proposal_id) if isinstance(proposal_id, str) else None
    if proposal is None:
        raise ApiError(404, "unknown_proposal", N_("No such proposal (proposals are kept until "
                                                   "the server restarts). Make a new one."))
    if proposal["model_sha256"] != st.model.sha256:
        raise ApiError(409, "model_changed", N_("This proposal was made for another model. Make "
                                                "a new one."))
    old = site_thresholds_state(st)
    try:
        accept(st.site, st.history, proposal, model_sha256=st.model.sha256,
               model_version=st.model.version, by=_text(body, "by", MAX_BY),
               old={"source": old["source"], "thresholds": old["thresholds"]},
               override=override)
    except GuardRailBlocked as exc:
        raise ApiError(409, "guard_rail", N_(
            "These thresholds were not saved: the proposal raises a threshold, and this "
            "clinic's confirmed pneumonias do not yet show that the setting would still find "
            "enough pneumonias. Confirm more pneumonia cases, or use it anyway with an "
            "override: a reason and your initials, kept in the audit trail."),
                       blocked=exc.blocked) from exc
    return jsonify(site_thresholds_state(st))


@bp.delete("/calibration")
def site_thresholds_revert() -> Response:
    """Forget this clinic's thresholds: the model's own apply again (audited)."""
    st = get_state()
    by = request.args.get("by")
    by = clean_text(by)[:MAX_BY] or None if by else None
    old = st.site.clear()
    if old is not None:
        st.history.add_audit("calibration_reverted",
                             {"source": "site", "thresholds": old.get("thresholds"),
                              "model_sha256": old.get("model_sha256")},
                             {"source": "model", "thresholds": model_thresholds(st)}, by=by)
    return jsonify(site_thresholds_state(st))


@bp.get("/status")
def status() -> Response:
    """Model, the thresholds in use and the drift check (for the page and for monitoring)."""
    st = get_state()
    cal = site_thresholds_state(st)
    return jsonify({"model": {"name": st.model.name, "version": st.model.version,
                              "sha256": st.model.sha256},
                    "threshold_source": cal["source"], "thresholds": cal["thresholds"],
                    "calibration": cal, "drift": drift_state(st)})
