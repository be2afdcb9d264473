"""The clinic's own cases in the JSON API (v1): confirmed findings, site thresholds, drift.

- ``PUT /api/v1/history/<id>/confirmation``: the clinician's final finding (audited);
- ``GET /api/v1/audit``: the append-only audit trail;
- ``POST /api/v1/calibration/proposal``, ``POST /api/v1/calibration``,
  ``GET /api/v1/calibration``, ``DELETE /api/v1/calibration``: this clinic's thresholds;
- ``GET /api/v1/status``: model, thresholds in use, drift check.
"""

from __future__ import annotations

import numpy as np
from flask import Blueprint, Response, jsonify, request

from edge_app import drift
from edge_app.analysis import site_thresholds
from edge_app.api import API_VERSION, public_record, record_or_404
from edge_app.config import clean_text
from edge_app.errors import ApiError
from edge_app.history import FINDINGS, utc_now_iso
from edge_app.i18n import N_, _
from edge_app.site_calibration import TooFewCases, propose
from edge_app.site_profile import accept
from edge_app.state import AppState, get_state

MAX_NOTE = 500
MAX_BY = 64

bp = Blueprint("site", __name__, url_prefix=f"/api/{API_VERSION}")
"""Confirmations, audit, site calibration and status; under /api/v1 like the rest."""


def _json_body() -> dict:
    """The request's JSON object (400 when the body is not one)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", N_("Send a JSON object (Content-Type: "
                                           "application/json)."))
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


def _model_thresholds(st: AppState) -> dict[str, float]:
    """The thresholds in the model file."""
    return {k: float(v) for k, v in st.model.thresholds.items()}


def calibration_state(st: AppState) -> dict:
    """Which thresholds answers use now, and why (also shown on the page)."""
    site = site_thresholds(st)
    profile = st.site.profile
    out = {"source": "site" if site else "model",
           "thresholds": site or _model_thresholds(st),
           "model_thresholds": _model_thresholds(st),
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
    return out


@bp.get("/calibration")
def calibration_get() -> Response:
    """The thresholds in use: this clinic's (source 'site') or the model's (source 'model')."""
    return jsonify(calibration_state(get_state()))


@bp.post("/calibration/proposal")
def calibration_proposal() -> Response:
    """Propose thresholds from the confirmed normal/pneumonia cases of the loaded model."""
    _json_body()  # may be {}: no options yet
    st = get_state()
    cases = _latest_per_image(st.history.confirmed(st.model.sha256))
    y = np.array([1 if r["finding"] == "pneumonia" else 0 for r in cases], dtype=int)
    p = np.array([float(r["probability"]) for r in cases])
    try:
        proposal = propose(y, p, site_thresholds(st) or _model_thresholds(st),
                           minimum=st.config["site_min_cases"])
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


@bp.post("/calibration")
def calibration_accept() -> Response:
    """Accept a proposal: its thresholds become this clinic's (saved, audited)."""
    body = _json_body()
    st = get_state()
    proposal_id = body.get("proposal_id")
    proposal = st.site_proposals.get(proposal_id) if isinstance(proposal_id, str) else None
    if proposal is None:
        raise ApiError(404, "unknown_proposal", N_("No such proposal (proposals are kept until "
                                                   "the server restarts). Make a new one."))
    if proposal["model_sha256"] != st.model.sha256:
        raise ApiError(409, "model_changed", N_("This proposal was made for another model. Make "
                                                "a new one."))
    old = calibration_state(st)
    accept(st.site, st.history, proposal, model_sha256=st.model.sha256,
           model_version=st.model.version, by=_text(body, "by", MAX_BY),
           old={"source": old["source"], "thresholds": old["thresholds"]})
    return jsonify(calibration_state(st))


@bp.delete("/calibration")
def calibration_revert() -> Response:
    """Forget this clinic's thresholds: the model's own apply again (audited)."""
    st = get_state()
    by = request.args.get("by")
    by = clean_text(by)[:MAX_BY] or None if by else None
    old = st.site.clear()
    if old is not None:
        st.history.add_audit("calibration_reverted",
                             {"source": "site", "thresholds": old.get("thresholds"),
                              "model_sha256": old.get("model_sha256")},
                             {"source": "model", "thresholds": _model_thresholds(st)}, by=by)
    return jsonify(calibration_state(st))


def drift_state(st: AppState) -> dict:
    """The drift check of the newest images analysed with the loaded model."""
    answers = [r for r in st.history.recent(drift.WINDOW)
               if r["model_sha256"] == st.model.sha256]
    thresholds = site_thresholds(st) or _model_thresholds(st)
    return drift.check(answers, st.history.recent_refusals(drift.WINDOW),
                       st.model.metadata.get("drift_reference"), thresholds,
                       cut=_model_thresholds(st).get("balanced", 0.5))


@bp.get("/status")
def status() -> Response:
    """Model, the thresholds in use and the drift check (for the page and for monitoring)."""
    st = get_state()
    cal = calibration_state(st)
    return jsonify({"model": {"name": st.model.name, "version": st.model.version,
                              "sha256": st.model.sha256},
                    "threshold_source": cal["source"], "thresholds": cal["thresholds"],
                    "calibration": cal, "drift": drift_state(st)})
