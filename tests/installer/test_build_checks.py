"""Fast checks of the executable's build script and launcher (no build needed)."""

from __future__ import annotations

import argparse
import socket

import pytest

from installer.build import FORBIDDEN, SOURCE_ITEMS, find_forbidden


def test_forbidden_detection_by_module_and_by_file():
    modules = ["numpy", "onnxruntime.capi._pybind_state", "onnxruntime.transformers.models",
               "tensorflow.python.framework"]
    files = ["torch/lib/libtorch_cpu.so", "numpy.libs/libscipy_openblas64_.so",
             "keras-3.15.1.dist-info/METADATA", "libtensorflow_framework.so.2",
             "tf2onnx/version.pyc"]
    assert find_forbidden(modules, files) == [
        "keras", "onnxruntime.transformers", "tensorflow", "tf2onnx", "torch"]


def test_runtime_packages_are_not_forbidden():
    modules = ["onnxruntime", "onnxruntime.capi.onnxruntime_inference_collection", "numpy",
               "PIL.Image", "flask", "waitress.server", "pydicom", "pneumo.app.web.app", "pneumo"]
    files = ["onnxruntime/capi/onnxruntime_pybind11_state.so", "onnxruntime-1.32.0.dist-info/RECORD",
             "pneumo/app/models/pneumo.int8.onnx", "pneumo/app/templates/index.html",
             "pillow.libs/libjpeg.so.62", "selftest/IM-0115-0001.jpeg", "libpython3.11.so.1.0"]
    assert find_forbidden(modules, files) == []


def test_forbidden_list_covers_the_training_stack():
    for name in ("tensorflow", "keras", "torch", "tf2onnx", "onnxruntime.transformers"):
        assert name in FORBIDDEN
    assert "pneumo" in SOURCE_ITEMS and "pyproject.toml" in SOURCE_ITEMS


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def test_launcher_takes_the_same_flags_as_pneumo_serve():
    cli = pytest.importorskip("pneumo.app.runtime.cli")
    from installer import entry

    root = argparse.ArgumentParser()
    cli.add_subcommands(root.add_subparsers())
    serve = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    serve_flags = _options(serve.choices["serve"]) - {"--open-browser", "-h", "--help"}
    launcher = _options(entry.build_parser())
    assert serve_flags <= launcher
    assert {"--no-browser", "--version", "--self-test"} <= launcher


def test_port_choice(capsys):
    pytest.importorskip("pneumo.app.config")
    from installer import entry

    assert entry.choose_port("127.0.0.1", 0) == 0  # explicit ports are used as given
    assert entry.choose_port("127.0.0.1", 9999) == 9999
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert not entry.port_is_free("127.0.0.1", taken)
    assert entry.port_is_free("127.0.0.1", taken)
