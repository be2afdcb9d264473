"""JSON errors everywhere: {"error": {"code": "...", "message": "..."}}.

Client mistakes get a 4xx with a stable code; anything unexpected a JSON 500 (logged) that
reveals no internals.
"""

from __future__ import annotations

import logging
import re
import sqlite3

from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from pneumo.app.history.faults import StorageBusy, StorageFull, is_busy
from pneumo.app.i18n import N_, _, translate
from pneumo.app.pipeline.checks import NotAChestXray
from pneumo.app.pipeline.decoded import ImageError
from pneumo.app.pipeline.predictor import BadMode

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answer with an HTTP status, a stable code and a message for people.

    ``message`` is a message id (``N_``) or a text already in the request's language (``_``);
    the ``code`` stays English and stable.
    """

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_response(status: int, code: str, message: str, **extra) -> Response:
    """A JSON error response (the message in the request's language when catalogued)."""
    body = {"code": code, "message": translate(message), **extra}
    resp = jsonify({"error": body})
    resp.status_code = status
    return resp


def _snake(name: str) -> str:
    """'Request Entity Too Large' -> 'request_entity_too_large'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _api_error(e: ApiError):
    return error_response(e.status, e.code, e.message, **e.extra)


def _image_error(e: ImageError):
    extra = {}
    if isinstance(e, NotAChestXray):
        extra["reasons"] = [r.to_json() for r in e.reasons]
        if e.fix:
            extra["fix"] = e.fix  # the page offers it ("Rotate and analyse"): orient=<fix>
    return error_response(e.status, e.code, e.localized(), **extra)


def _bad_mode(e: BadMode):
    return error_response(400, "bad_mode", e.localized())


TOO_LARGE = N_("The upload is too large. Please send a file smaller than %(size)s MB.")
"""The `file_too_large` message (``size``: the limit in MB)."""


def too_large_params(limit: int) -> dict:
    """TOO_LARGE's parameters for a limit in bytes."""
    return {"size": f"{limit / 2**20:.0f}"}


def too_large_message(limit: int) -> str:
    """The message of a `file_too_large` answer, in the request's language (English outside)."""
    return _(TOO_LARGE, **too_large_params(limit))


def _form_limit_hit(e: RequestEntityTooLarge) -> str | None:
    """Which form limit Werkzeug's multipart parser hit: 'parts', 'field' or None (size)."""
    tb = e.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame
        tb = tb.tb_next
    if last is None:
        return None
    module = last.f_globals.get("__name__", "")
    if module == "werkzeug.sansio.multipart" and last.f_code.co_name == "next_event":
        return "parts"
    if module in ("werkzeug.sansio.multipart", "werkzeug.formparser"):
        return "field"
    return None


def _too_large(e: RequestEntityTooLarge):
    cfg = current_app.config
    which = _form_limit_hit(e)
    if which == "parts":
        return error_response(413, "too_many_form_parts", _(
            "The form has too many parts (at most %(limit)s). Send one image in the field "
            "'image' and a few short fields.", limit=cfg.get("MAX_FORM_PARTS")))
    if which == "field":
        limit = cfg.get("MAX_FORM_MEMORY_SIZE") or 0
        return error_response(413, "form_field_too_large", _(
            "A form field other than the image is longer than %(size)s kB. Send the X-ray as a "
            "file in the field 'image'.", size=limit // 1000))
    return error_response(413, "file_too_large",
                          too_large_message(cfg.get("MAX_CONTENT_LENGTH") or 0))


def _storage_full(e: StorageFull):
    return error_response(507, "storage_full", N_("The result could not be saved: the computer's "
                                               "disk is full. Free some disk space (or ask your "
                                               "IT contact), then try again."))


BUSY_RETRY_AFTER_S = 5
"""The Retry-After of a 503 answered while another program holds the history locked."""


def _storage_busy(e: StorageBusy):
    resp = error_response(503, "history_busy", N_(
        "The result could not be saved: another program is using the app's history right now "
        "(usually a backup or file-sync tool, or an antivirus scan). Nothing in the history "
        "was lost. Send the X-ray again in a few seconds; if this keeps happening, ask your IT "
        "contact."),
        retry_after_s=BUSY_RETRY_AFTER_S)
    resp.headers["Retry-After"] = str(BUSY_RETRY_AFTER_S)
    return resp


def _database_error(e: sqlite3.OperationalError):
    """A history read that stayed locked (busy) is a 503 too; any other is a 500."""
    if is_busy(e):
        log.warning("history in use by another program: %s", e)
        return _storage_busy(StorageBusy(str(e)))
    return _internal(e)


HTTP_MESSAGES = {
    NotFound: N_("There is nothing at this address."),
    MethodNotAllowed: N_("This address does not accept this kind of request."),
}
"""Our words (translated) for Werkzeug's own answers when they carry its default description."""


def _http(e: HTTPException):
    code = e.code or 500
    if code >= 500:
        return _internal(e)
    message = e.description or e.name
    if type(e) in HTTP_MESSAGES and e.description == type(e).description:
        message = HTTP_MESSAGES[type(e)]
    resp = error_response(code, _snake(e.name), message)
    allow = getattr(e, "valid_methods", None)
    if allow:
        resp.headers["Allow"] = ", ".join(allow)
    return resp


def _internal(e: Exception):
    log.exception("internal error", exc_info=e)
    return error_response(500, "internal_error", N_("Something went wrong on the server. The "
                                                    "error was logged."))


def init_app(app: Flask) -> None:
    """Register the JSON error handlers."""
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(ImageError, _image_error)
    app.register_error_handler(BadMode, _bad_mode)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(StorageFull, _storage_full)
    app.register_error_handler(StorageBusy, _storage_busy)
    app.register_error_handler(sqlite3.OperationalError, _database_error)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(Exception, _internal)
