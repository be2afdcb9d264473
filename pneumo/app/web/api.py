"""The JSON API (version 1) and the health check."""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    request,
    stream_with_context,
    url_for,
)

from pneumo.app.analysis import analyse
from pneumo.app.config import DEFAULT_SETTING, MAX_PATIENT_REF, clean_text, is_loopback
from pneumo.app.history.schema import FIELDS, is_record_id, parse_bound
from pneumo.app.i18n import N_, _
from pneumo.app.pipeline import heatmap as hm
from pneumo.app.pipeline.orientation import TRANSFORMS
from pneumo.app.pipeline.predictor import add_laps
from pneumo.app.pipeline.wording import INTENDED_USE, answer
from pneumo.app.web.errors import ApiError
from pneumo.app.web.state import SHUTDOWN_HOOK, get_state

log = logging.getLogger(__name__)

API_VERSION = "v1"
MAX_FILE_NAME = 255
MAX_PER_PAGE = 500

CSV_COLUMNS = (*FIELDS, "warning_messages", "headline", "probability_text", "next_steps",
               "notes")
"""History CSV columns: every stored field (``warnings`` as codes), the warnings' sentences,
and the plain words of the answer (as the predict answer gives them)."""

bp = Blueprint("api", __name__, url_prefix=f"/api/{API_VERSION}")
"""The JSON API; every route under /api/v1."""
health = Blueprint("health", __name__)
"""The health check at /healthz (outside the versioned API: monitors use it as is)."""



def _model_summary() -> dict:
    m = get_state().model
    return {"name": m.name, "version": m.version, "sha256": m.sha256,
            "source": get_state().config.get("model_source")}


@health.get("/healthz")
def healthz() -> Response:
    """Liveness and the loaded model."""
    return jsonify({"status": "ok", "model": _model_summary()})


@bp.get("/model")
def model_info() -> Response:
    """The model's metadata (without the OOD arrays) and its model card."""
    m = get_state().model
    meta = {k: v for k, v in m.metadata.items() if k != "ood"}
    meta["ood"] = m.ood
    return jsonify({
        **_model_summary(),
        "input_size": m.input_size,
        "class_names": m.class_names,
        "thresholds": m.thresholds,
        "modes": list(m.thresholds),
        "calibration": m.calibration,
        "intensity": m.intensity,
        "operating_points_source": m.metadata.get("operating_points_source"),
        "external_metrics": m.metadata.get("external_metrics"),
        "intended_use": _(INTENDED_USE),
        "metadata": meta,
        "model_card": m.model_card,
    })


def _patient_ref() -> str | None:
    ref = request.form.get("patient_ref")
    if ref is None:
        return None
    ref = clean_text(ref)  # no control, bidi or zero-width characters in reports and CSV
    if len(ref) > MAX_PATIENT_REF:
        raise ApiError(400, "bad_patient_ref",
                       _("The patient reference is longer than %(limit)s characters.",
                         limit=MAX_PATIENT_REF))
    return ref or None


def _file_name(raw: str | None) -> str | None:
    """The uploaded file's own name (no folders, no control characters), or None."""
    name = clean_text((raw or "").replace("\\", "/").rsplit("/", 1)[-1])
    return name[:MAX_FILE_NAME] or None


def _flag(name: str) -> bool:
    return (request.form.get(name) or request.args.get(name) or "").lower() in ("1", "true", "yes")


def _orient() -> str | None:
    """The optional ``orient`` field ("Rotate and analyse"): checked here, once."""
    value = (request.form.get("orient") or "").strip()
    if value and value not in TRANSFORMS:
        raise ApiError(400, "bad_orient", _("Unknown orient '%(orient)s'. Use one of: "
                                            "%(choices)s.", orient=clean_text(value)[:40],
                                            choices=", ".join(TRANSFORMS)))
    return value or None


@bp.post("/predict")
def predict() -> Response:
    """Analyse one uploaded image (multipart field 'image')."""
    start = time.perf_counter()
    st = get_state()
    mode = (request.form.get("mode") or DEFAULT_SETTING).strip()  # parses the multipart body
    st.predictor.check_mode(mode)
    upload = request.files.get("image")
    if upload is None and not request.files and not request.form and request.content_length \
            and request.mimetype == "multipart/form-data":  # the parser gave up on the body
        raise ApiError(400, "unreadable_upload", N_(
            "The upload could not be read: the file name or another form field is not valid "
            "text. Rename the file (letters and digits only) and send it again."))
    if upload is None:
        raise ApiError(400, "missing_image", N_("Send the X-ray as a multipart/form-data file "
                                                "in the field 'image'."))
    patient_ref = _patient_ref()
    orient = _orient()
    data = upload.read()
    upload.close()  # frees the parsed copy of the upload before decoding (memory)
    file_name = _file_name(upload.filename)
    received = time.perf_counter() - start
    result, record = analyse(st, data, mode=mode, preview=_flag("preview"),
                             patient_ref=patient_ref, file_name=file_name, orient=orient)
    add_laps(result.timings_ms, upload=received)
    body = {"id": record["id"], "created_at": record["created_at"], "patient_ref": patient_ref,
            "file_name": file_name, **result.to_json(),
            "heatmap_url": url_for("api.history_heatmap", record_id=record["id"]),
            "image_url": url_for("api.history_image", record_id=record["id"])}
    if result.preview_png is not None:
        body["preview"] = result.preview_data_url()
    return jsonify(body)


def _range() -> tuple[str | None, str | None]:
    try:
        return (parse_bound(request.args.get("from"), end=False),
                parse_bound(request.args.get("to"), end=True))
    except ValueError as exc:
        raise ApiError(400, "bad_date", N_("Dates must look like 2025-01-31 or "
                                           "2025-01-31T14:00:00Z.")) from exc


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError(400, "bad_parameter", _("'%(name)s' must be a whole number.",
                                               name=name)) from exc
    if not lo <= value <= hi:
        raise ApiError(400, "bad_parameter", _("'%(name)s' must be between %(low)s and "
                                               "%(high)s.", name=name, low=lo, high=hi))
    return value


def public_record(rec: dict) -> dict:
    """A history record as the API shows it: its words (pneumo.app.pipeline.wording), and heatmap and
    image URLs while they are kept."""
    has = rec.pop("has_heatmap", False)
    words = answer(rec, get_state().model.class_names[1])
    rec.update(outcome=words["outcome"], headline=words["headline"], short=words["short"],
               icon=words["icon"])
    rec["heatmap_url"] = (url_for("api.history_heatmap", record_id=rec["id"]) if has else None)
    rec["image_url"] = (url_for("api.history_image", record_id=rec["id"]) if has else None)
    return rec


@bp.get("/history")
def history_list() -> Response:
    """One page of the history, newest first (page, per_page, from, to)."""
    page = _int_arg("page", 1, 1, 10**9)
    per_page = _int_arg("per_page", 50, 1, MAX_PER_PAGE)
    date_from, date_to = _range()
    items, total = get_state().history.page(page, per_page, date_from, date_to)
    return jsonify({"items": [public_record(r) for r in items], "page": page, "per_page": per_page,
                    "total": total, "pages": (total + per_page - 1) // per_page})


def _csv_cell(value) -> str:
    """A CSV cell that spreadsheets will not run as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        value = "; ".join(w.get("code", "") for w in value)
    if isinstance(value, dict):
        value = json.dumps(value, sort_keys=True)
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(text)
        except ValueError:
            text = "'" + text
    return text


def _csv_row(rec: dict, positive: str) -> list[str]:
    """One history record as CSV cells, in CSV_COLUMNS order."""
    warnings = rec.get("warnings") or []
    words = answer(rec, positive)
    extra = {
        "outcome": words["outcome"],
        "warning_messages": " | ".join(w.get("message", "") for w in warnings),
        "headline": words["headline"],
        "probability_text": words["probability_text"],
        "next_steps": " | ".join(words["next_steps"]),
        "notes": " | ".join(words["notes"]),
    }
    return [_csv_cell(extra[k] if k in extra else rec[k]) for k in CSV_COLUMNS]


@bp.get("/history.csv")
def history_csv() -> Response:
    """The history as CSV (from, to filters), oldest first, UTF-8 with a byte-order mark."""
    date_from, date_to = _range()
    store = get_state().history
    positive = get_state().model.class_names[1]

    def rows() -> Iterator[str]:
        """CSV text in chunks of about 32 kB."""
        buf = io.StringIO()
        buf.write("\ufeff")  # spreadsheet programs then read accents and dashes as UTF-8
        writer = csv.writer(buf)
        writer.writerow(CSV_COLUMNS)
        for rec in store.iter_all(date_from, date_to):
            writer.writerow(_csv_row(rec, positive))
            if buf.tell() > 32768:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Response(stream_with_context(rows()), mimetype="text/csv",
                    headers={"Content-Disposition":
                             f'attachment; filename="pneumo-history-{stamp}.csv"'})


def record_or_404(record_id: str) -> dict:
    """The history record with this id, or a 404 ApiError."""
    rec = get_state().history.get(record_id) if is_record_id(record_id) else None
    if rec is None:
        raise ApiError(404, "not_found", N_("No such history record."))
    return rec


@bp.get("/history/<record_id>")
def history_item(record_id: str) -> Response:
    """One history record."""
    return jsonify(public_record(record_or_404(record_id)))


@bp.get("/history/<record_id>/heatmap.png")
def history_heatmap(record_id: str) -> Response:
    """The heatmap overlay of a recent prediction."""
    record_or_404(record_id)
    blob = get_state().history.heatmap(record_id)
    if blob is None:
        raise ApiError(404, "heatmap_expired", N_("The heatmap of this older result is no longer "
                                                  "kept; only the most recent ones are."))
    return Response(hm.render(blob), mimetype="image/png")



@bp.get("/history/<record_id>/image.png")
def history_image(record_id: str) -> Response:
    """The X-ray of a recent prediction (grayscale, display size; kept with its heatmap)."""
    record_or_404(record_id)
    blob = get_state().history.heatmap(record_id)
    png = hm.render_image(blob) if blob is not None else None
    if png is None:
        raise ApiError(404, "image_expired", N_("The X-ray of this older result is no longer "
                                                "kept; only the most recent ones are."))
    return Response(png, mimetype="image/png")


@bp.post("/shutdown")
def shutdown() -> Response:
    """Stop the app (the page's "Stop the app"): 202 {"status": "stopping"}, then a clean stop.

    Refused (403) when turned off (--no-stop-button) and, unless the server has a token or
    PIN, from any computer but this one; 409 when no server of ours runs the app.
    """
    st = get_state()
    if not st.config["allow_shutdown"]:
        raise ApiError(403, "shutdown_disabled", N_("Stopping the app from the page is turned "
                                                    "off. Stop it where it was started."))
    guarded = bool(st.config["token"]) or "pneumo_pin" in current_app.extensions
    if not guarded and not is_loopback(request.remote_addr or ""):
        raise ApiError(403, "shutdown_not_local", N_("The app can only be stopped from the "
                                                     "computer it runs on."))
    stop = current_app.extensions.get(SHUTDOWN_HOOK)
    if stop is None:
        raise ApiError(409, "shutdown_unavailable", N_("This app cannot be stopped from the "
                                                       "page. Stop it where it was started."))
    log.info("stop asked from the page by %s", request.remote_addr)
    resp = jsonify({"status": "stopping"})
    resp.status_code = 202
    resp.call_on_close(stop)  # after the answer is written; the server waits a moment more
    return resp
