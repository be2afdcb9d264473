"""JSON errors everywhere: {"error": {"code": "...", "message": "..."}}.

Client mistakes get a 4xx with a stable code; anything unexpected a JSON 500 (logged) that
reveals no internals.
"""

from __future__ import annotations

import logging
import re

from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from edge_app.checks import NotAChestXray
from edge_app.imaging import ImageError
from edge_app.pipeline import BadMode

log = logging.getLogger("edge_app")


class ApiError(Exception):
    """An error answer with an HTTP status, a stable code and a message for people."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_response(status: int, code: str, message: str, **extra) -> Response:
    """A JSON error response."""
    body = {"code": code, "message": message, **extra}
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
    return error_response(e.status, e.code, e.message, **extra)


def _bad_mode(e: BadMode):
    return error_response(400, "bad_mode", str(e))


def _too_large(e: RequestEntityTooLarge):
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or 0
    return error_response(413, "file_too_large", "The upload is too large. Please send a file "
                                                 f"smaller than {limit / 2**20:.0f} MB.")


def _http(e: HTTPException):
    code = e.code or 500
    if code >= 500:
        return _internal(e)
    resp = error_response(code, _snake(e.name), e.description or e.name)
    allow = getattr(e, "valid_methods", None)
    if allow:
        resp.headers["Allow"] = ", ".join(allow)
    return resp


def _internal(e: Exception):
    log.exception("internal error", exc_info=e)
    return error_response(500, "internal_error", "Something went wrong on the server. The "
                                                 "error was logged.")


def init_app(app: Flask) -> None:
    """Register the JSON error handlers."""
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(ImageError, _image_error)
    app.register_error_handler(BadMode, _bad_mode)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(Exception, _internal)
