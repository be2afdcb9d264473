"""Shared fixtures: the model under test, the Flask app and client, a real Waitress server.

The model comes from $PNEUMO_TEST_MODEL, else the bundled default model
(edge_app/models/pneumo.int8.onnx).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MODEL_ENV = "PNEUMO_TEST_MODEL"


@pytest.fixture(scope="session")
def test_model_path() -> Path:
    """Path of the ONNX model the app tests run against."""
    from edge_app.onnx_model import DEFAULT_MODEL

    env = os.environ.get(MODEL_ENV)
    path = Path(env) if env else DEFAULT_MODEL
    if not path.is_file():
        if env:
            pytest.fail(f"{MODEL_ENV}={env} does not exist")
        pytest.skip(f"no model to test with: {DEFAULT_MODEL} is missing (set {MODEL_ENV})")
    return path


@pytest.fixture(scope="session")
def model(test_model_path):
    """One loaded OnnxModel shared by the tests."""
    from edge_app.onnx_model import OnnxModel

    return OnnxModel(test_model_path)


@pytest.fixture
def app_config(model, tmp_path) -> dict:
    """Settings for a test app with its own empty history."""
    return {"model": model, "data_dir": tmp_path / "data", "secret_key": "test-secret"}


@pytest.fixture
def app(app_config):
    """A fresh Flask app (loopback mode, no token)."""
    from edge_app.app import create_app
    from edge_app.state import get_state

    app = create_app(app_config)
    yield app
    get_state(app).history.close()


@pytest.fixture
def client(app):
    """Flask test client of `app`."""
    return app.test_client()


@pytest.fixture
def server_factory(test_model_path, tmp_path):
    """Start real Waitress servers (subprocesses on free loopback ports); stopped at the end."""
    from apptools import start_server

    started = []

    def start(data_dir: Path | None = None, *extra: str):
        srv = start_server(test_model_path, data_dir or tmp_path / "server-data", *extra)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def live_server(server_factory):
    """One real Waitress server running the app."""
    return server_factory()
