"""pneumo/app/web/errors.py on its own: every error type becomes the documented JSON answer."""

import io
import logging

import pytest
from flask import Flask, request

from pneumo.app.history.faults import StorageFull
from pneumo.app.pipeline.checks import Finding, NotAChestXray
from pneumo.app.pipeline.decoded import ImageError
from pneumo.app.pipeline.predictor import BadMode
from pneumo.app.web import errors


@pytest.fixture
def client():
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=2 * 2**20, MAX_FORM_PARTS=3,
                      MAX_FORM_MEMORY_SIZE=1000)
    raising = {
        "api": errors.ApiError(409, "conflict_here", "Try again.", retry_after=3),
        "image": ImageError("Not an image we can read."),
        "image-coded": ImageError("Too big.", code="image_too_large", status=413),
        "xray": NotAChestXray([Finding("color", "It is in colour."),
                               Finding("size", "It is tiny.")]),
        "mode": BadMode("unknown mode 'fast'"),
        "full": StorageFull("disk full"),
        "bug": RuntimeError("secret internals /home/user/x.py"),
    }

    @app.get("/raise/<name>")
    def raise_(name):
        raise raising[name]

    @app.post("/form")
    def form():
        return {"fields": len(request.form) + len(request.files)}

    errors.init_app(app)
    return app.test_client()


def _error(resp, status):
    assert resp.status_code == status and resp.is_json
    return resp.get_json()["error"]


def test_api_error_carries_status_code_message_and_extras(client):
    assert _error(client.get("/raise/api"), 409) == {
        "code": "conflict_here", "message": "Try again.", "retry_after": 3}


def test_image_errors(client):
    assert _error(client.get("/raise/image"), 415) == {
        "code": "unsupported_image", "message": "Not an image we can read."}
    assert _error(client.get("/raise/image-coded"), 413)["code"] == "image_too_large"
    e = _error(client.get("/raise/xray"), 422)
    assert e["code"] == "not_a_chest_xray" and "It is in colour." in e["message"]
    assert e["reasons"] == [{"code": "color", "message": "It is in colour."},
                            {"code": "size", "message": "It is tiny."}]


def test_bad_mode_and_storage_full(client):
    assert _error(client.get("/raise/mode"), 400) == {"code": "bad_mode",
                                                      "message": "unknown mode 'fast'"}
    e = _error(client.get("/raise/full"), 507)
    assert e["code"] == "storage_full" and "disk is full" in e["message"]


def test_unexpected_errors_are_logged_but_not_revealed(client, caplog):
    with caplog.at_level(logging.ERROR, logger="pneumo.app.web.errors"):
        e = _error(client.get("/raise/bug"), 500)
    assert e["code"] == "internal_error" and "secret" not in e["message"]
    assert "secret internals" in caplog.text  # the traceback is in the log


def test_http_errors_get_snake_case_codes(client):
    assert _error(client.get("/nowhere"), 404)["code"] == "not_found"
    resp = client.delete("/form")
    assert _error(resp, 405)["code"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]


def test_size_limits_name_the_limit_that_was_hit(client):
    big = {"image": (io.BytesIO(b"x" * (3 * 2**20)), "x.jpeg")}
    e = _error(client.post("/form", data=big), 413)
    assert e == {"code": "file_too_large", "message": errors.too_large_message(2 * 2**20)}
    parts = {f"f{i}": "v" for i in range(6)}
    assert _error(client.post("/form", data=parts, content_type="multipart/form-data"),
                  413)["code"] == "too_many_form_parts"
    field = {"note": "y" * 5000, "image": (io.BytesIO(b"x"), "x.jpeg")}
    assert _error(client.post("/form", data=field), 413)["code"] == "form_field_too_large"
    assert client.post("/form", data={"a": "1"}).get_json() == {"fields": 1}


def test_too_large_message_in_megabytes():
    assert errors.too_large_message(30 * 2**20) == (
        "The upload is too large. Please send a file smaller than 30 MB.")
