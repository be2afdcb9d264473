"""The server-rendered page (upload, result, history) and a printable report page."""

from __future__ import annotations

import re

from flask import Blueprint, render_template

from edge_app.errors import ApiError
from edge_app.predictor import (
    BORDERLINE_NOTE,
    GUIDANCE_LABEL,
    HEATMAP_NOTE,
    INTENDED_USE,
    headline,
    next_steps,
    probability_text,
)
from edge_app.security import csrf_token
from edge_app.state import get_state

bp = Blueprint("pages", __name__)

FINDING_LABELS = (("normal", "Normal"), ("pneumonia", "Pneumonia"), ("other", "Other finding"),
                  ("unknown", "Not known yet"))
"""The clinician's findings (history.FINDINGS) as the page words them."""

_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def _context() -> dict:
    st = get_state()
    m = st.model
    return {
        "model": {"name": m.name, "version": m.version, "sha256": m.sha256,
                  "thresholds": m.thresholds, "input_size": m.input_size},
        "model_card": m.model_card,
        "calibrated_on": st.predictor.calibrated_on,
        "intended_use": INTENDED_USE,
        "borderline_note": BORDERLINE_NOTE,
        "guidance_label": GUIDANCE_LABEL,
        "heatmap_note": HEATMAP_NOTE,
        "clinic_name": st.config["clinic_name"],
        "max_upload_mb": round(st.config["max_upload_bytes"] / 2**20),
        "findings": FINDING_LABELS,
    }


@bp.get("/")
def index() -> str:
    """The main page."""
    return render_template("index.html", csrf=csrf_token(), **_context())


@bp.get("/report/<record_id>")
def report(record_id: str) -> str:
    """A printable report of one history record."""
    st = get_state()
    rec = st.history.get(record_id) if _ID_RE.match(record_id) else None
    if rec is None:
        raise ApiError(404, "not_found", "No such history record.")
    positive = st.model.class_names[1]
    codes = [w.get("code", "") for w in rec["warnings"]]
    # Records made before `calibrated` was stored are shown as a score (never a chance).
    number = probability_text(rec["probability"], rec["threshold"],
                              rec["calibrated_on"] if rec["calibrated"] else None)
    words = {
        "positive": rec["label"] == positive,
        "headline": headline(rec["label"], positive, rec["confidence"]),
        "probability": number[:1].upper() + number[1:],
        "next_steps": next_steps(rec["label"], rec["confidence"], codes, positive),
    }
    return render_template("report.html", rec=rec, words=words,
                           finding_label=dict(FINDING_LABELS).get(rec["finding"] or "", ""),
                           **_context())
