"""Shared fixtures: the model under test, the Flask app and client, a real Waitress server,
and one tiny training run shared by the training and export tests.

The model comes from $PNEUMO_TEST_MODEL, else the bundled default model
(pneumo/app/models/pneumo.int8.onnx).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MODEL_ENV = "PNEUMO_TEST_MODEL"


@pytest.fixture(scope="session")
def test_model_path() -> Path:
    """Path of the ONNX model the app tests run against."""
    from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL

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
    from pneumo.app.pipeline.onnx_model import OnnxModel

    return OnnxModel(test_model_path)


@pytest.fixture
def app_config(model, tmp_path) -> dict:
    """Settings for a test app with its own empty history."""
    return {"model": model, "data_dir": tmp_path / "data", "secret_key": "test-secret"}


@pytest.fixture
def app(app_config):
    """A fresh Flask app (loopback mode, no token)."""
    from pneumo.app.web.app import create_app
    from pneumo.app.web.state import get_state

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


@pytest.fixture(scope="session")
def tiny_kaggle(tmp_path_factory) -> Path:
    """A tiny Kaggle-layout folder: train/ with 24 perturbed fixture X-rays per class."""
    from tinydata import make_tiny_kaggle

    return make_tiny_kaggle(tmp_path_factory.mktemp("tiny-kaggle"), per_class=24)


@pytest.fixture(scope="session")
def tiny_run(tiny_kaggle, tmp_path_factory) -> Path:
    """One real tiny training run (2 epochs, 64 px), made once per test session.

    Shared by tests/train and tests/export: read it, never write into it (copy it first).
    """
    pytest.importorskip("tensorflow")
    from pneumo.cli import main

    out = tmp_path_factory.mktemp("tiny-run")
    assert main(["train", "--data", str(tiny_kaggle), "--out", str(out), "--epochs", "2",
                 "--img-size", "64", "--batch-size", "16", "--seed", "3"]) == 0
    return out
