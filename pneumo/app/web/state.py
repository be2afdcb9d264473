"""What the request handlers share (settings, model, predictor, history), and how they get it."""

from __future__ import annotations

from flask import Flask, current_app

from pneumo.app.analysis import AppState

EXTENSION_KEY = "pneumo"
"""Where create_app keeps the AppState in ``app.extensions``."""

SHUTDOWN_HOOK = "pneumo_shutdown"
"""Where the server (pneumo.app.runtime.server) puts its stop request in ``app.extensions``: a callable
that stops it shortly after the answer is sent (POST /api/v1/shutdown); absent otherwise."""


def get_state(app: Flask | None = None) -> AppState:
    """The AppState of ``app`` (default: the app handling the current request)."""
    return (app or current_app).extensions[EXTENSION_KEY]


def set_state(app: Flask, state: AppState) -> None:
    """Attach the AppState to ``app`` (create_app calls it once)."""
    app.extensions[EXTENSION_KEY] = state
