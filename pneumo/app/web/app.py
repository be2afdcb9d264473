"""Flask app factory of the clinic app: configuration in, app out, no import-time globals."""

from __future__ import annotations

import io
import secrets
from contextlib import ExitStack

from flask import Flask, Request, g, request

from pneumo.app.analysis import AppState
from pneumo.app.clinic.site_profile import SiteProfile
from pneumo.app.config import resolve
from pneumo.app.history.schema import DB_NAME
from pneumo.app.history.store import HistoryStore
from pneumo.app.pipeline.memory import DecodeGate, map_large_buffers, release_memory
from pneumo.app.pipeline.onnx_model import OnnxModel
from pneumo.app.pipeline.predictor import Predictor
from pneumo.app.updates.model_store import describe as describe_model_source
from pneumo.app.web import api, errors, pages, security, site_api
from pneumo.app.web import i18n as web_i18n
from pneumo.app.web.pin import PinGuard
from pneumo.app.web.state import set_state

LARGE_UPLOAD_BYTES = 8 * 1024 * 1024
"""Request bodies from this size on wait for one of `max_large_uploads` slots."""


class InMemoryRequest(Request):
    """Keeps uploaded files in memory (never spooled to a temporary file on disk)."""

    def _get_file_stream(self, total_content_length, content_type, filename=None,
                         content_length=None):
        return io.BytesIO()


def create_app(config: dict | None = None) -> Flask:
    """Build the app from settings (see pneumo.app.config.DEFAULTS for the keys)."""
    cfg = resolve(config)
    map_large_buffers()  # freed image buffers go back to the OS (RSS returns to baseline)
    app = _flask(cfg)
    set_state(app, _state(cfg))
    _pin(app, cfg)
    security.init_app(app)
    web_i18n.init_app(app, cfg["lang"])
    errors.init_app(app)
    for blueprint in (pages.bp, api.health, api.bp, site_api.bp):
        app.register_blueprint(blueprint)
    app.jinja_env.globals["model_source"] = cfg["model_source"]
    _upload_memory(app, cfg)
    return app


def _flask(cfg: dict) -> Flask:
    """The Flask object: in-memory uploads, no debug, the upload size limit."""
    app = Flask("pneumo.app", static_folder="static", template_folder="templates")
    app.request_class = InMemoryRequest
    app.config.update(
        DEBUG=False,
        TESTING=False,
        PROPAGATE_EXCEPTIONS=False,
        SECRET_KEY=cfg["secret_key"] or secrets.token_bytes(32),
        MAX_CONTENT_LENGTH=cfg["max_upload_bytes"],
        SEND_FILE_MAX_AGE_DEFAULT=300,
    )
    app.json.sort_keys = False
    return app


def _state(cfg: dict) -> AppState:
    """The model, the pipeline, the history and the site profile the handlers share."""
    model = cfg["model"] or OnnxModel(cfg["model_path"], intra_op_threads=1, inter_op_threads=1)
    cfg["model_source"] = describe_model_source(model.path, cfg["data_dir"])
    history = HistoryStore(cfg["data_dir"] / DB_NAME, heatmap_keep=cfg["heatmap_keep"],
                           keep_images=cfg["keep_images"],
                           busy_timeout_s=cfg["history_busy_timeout_s"])
    return AppState(config=cfg, model=model,
                    predictor=Predictor(model, max_pixels=cfg["max_pixels"],
                                        large_decodes=cfg["max_large_decodes"]),
                    history=history, site=SiteProfile(cfg["data_dir"]))


def _pin(app: Flask, cfg: dict) -> None:
    """The opt-in access PIN of a shared computer."""
    if cfg["require_pin"] and cfg["token"] is None:
        app.extensions["pneumo_pin"] = PinGuard.from_config(cfg)


def _upload_memory(app: Flask, cfg: dict) -> None:
    """Large uploads wait for a slot, and their memory goes back to the OS afterwards."""
    upload_gate = DecodeGate(cfg["max_large_uploads"], large_bytes=LARGE_UPLOAD_BYTES)

    @app.before_request
    def _large_upload_slot() -> None:
        """A large body is parsed only when a slot is free (Waitress keeps it on disk meanwhile):
        several maximum-size uploads at once must not add up in memory."""
        size = request.content_length or 0
        if request.method == "POST" and size >= LARGE_UPLOAD_BYTES:
            slot = ExitStack()
            slot.enter_context(upload_gate.hold(size))  # 503 server_busy after 2 minutes
            g.upload_slot = slot

    @app.teardown_request
    def _give_memory_back(exc: BaseException | None) -> None:
        """After an upload, free its slot and hand the decoder's freed memory back to the OS."""
        slot = g.pop("upload_slot", None)
        if slot is not None:
            slot.close()
        if request.method == "POST":
            release_memory()
