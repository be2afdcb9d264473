"""What the request handlers share (settings, model, predictor, history), and how they get it."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import Flask, current_app

from pneumo.app.clinic.site_profile import SiteProfile
from pneumo.app.clinic.site_thresholds import Proposals
from pneumo.app.history.store import HistoryStore
from pneumo.app.pipeline.onnx_model import OnnxModel
from pneumo.app.pipeline.predictor import Predictor

EXTENSION_KEY = "pneumo"
"""Where create_app keeps the AppState in ``app.extensions``."""

SHUTDOWN_HOOK = "pneumo_shutdown"
"""Where the server (pneumo.app.runtime.server) puts its stop request in ``app.extensions``: a callable
that stops it shortly after the answer is sent (POST /api/v1/shutdown); absent otherwise."""


@dataclass
class AppState:
    """What the request handlers share: settings, model, pipeline, history."""

    config: dict
    model: OnnxModel
    predictor: Predictor
    history: HistoryStore
    site: SiteProfile
    site_proposals: Proposals = field(default_factory=Proposals)


def get_state(app: Flask | None = None) -> AppState:
    """The AppState of ``app`` (default: the app handling the current request)."""
    return (app or current_app).extensions[EXTENSION_KEY]


def set_state(app: Flask, state: AppState) -> None:
    """Attach the AppState to ``app`` (create_app calls it once)."""
    app.extensions[EXTENSION_KEY] = state
