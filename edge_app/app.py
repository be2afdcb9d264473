"""Flask app factory of the clinic app: configuration in, app out, no import-time globals."""

from __future__ import annotations

import io
import secrets
from dataclasses import dataclass

from flask import Flask, Request

from edge_app import api, errors, pages, security
from edge_app.config import resolve
from edge_app.history import DB_NAME, HistoryStore
from edge_app.model import OnnxModel
from edge_app.pipeline import Predictor


class InMemoryRequest(Request):
    """Keeps uploaded files in memory (never spooled to a temporary file on disk)."""

    def _get_file_stream(self, total_content_length, content_type, filename=None,
                         content_length=None):
        return io.BytesIO()


@dataclass
class AppState:
    """What the request handlers share: settings, model, pipeline, history."""

    config: dict
    model: OnnxModel
    predictor: Predictor
    history: HistoryStore


def create_app(config: dict | None = None) -> Flask:
    """Build the app from settings (see edge_app.config.DEFAULTS for the keys)."""
    cfg = resolve(config)
    app = Flask("edge_app", static_folder="static", template_folder="templates")
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
    model = cfg["model"] or OnnxModel(cfg["model_path"], intra_op_threads=1, inter_op_threads=1)
    history = HistoryStore(cfg["data_dir"] / DB_NAME, heatmap_keep=cfg["heatmap_keep"],
                           keep_images=cfg["keep_images"])
    app.extensions["pneumo"] = AppState(
        config=cfg, model=model, predictor=Predictor(model, max_pixels=cfg["max_pixels"]),
        history=history,
    )
    security.init_app(app)
    errors.init_app(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    return app
