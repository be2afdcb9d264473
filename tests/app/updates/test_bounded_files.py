"""Files a user can swap are parsed within bounds: a deeply nested or oversized signature,
installed-models list, model metadata, site-thresholds file or instance.json is a clean
refusal (one line, exit code 2 from the command line), never a RecursionError traceback."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pneumo.app.bounded_json import MAX_DEPTH
from pneumo.app.clinic.site_profile import PROFILE_NAME, SiteProfile
from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, METADATA_KEY, OnnxModel, read_metadata
from pneumo.app.runtime.instance import InstanceLock
from pneumo.app.updates.model_store import STATE_NAME, ModelStoreError, active_entry, models_dir
from pneumo.app.updates.signing import (
    MAX_SIG_BYTES,
    RELEASE_PUBLIC_KEY,
    SignatureError,
    signature_path,
    verify_model,
)
from pneumo.cli import main as pneumo

DEEP = "[" * 100_000 + "]" * 100_000
DEEP_SIG = "[" * 20_000 + "]" * 20_000  # within the signature's size limit
DEEP_OBJECT = '{"signature": ' + "[" * 20_000 + "]" * 20_000 + "}"
CLI = [sys.executable, "-c", "import sys; from pneumo.cli import main; sys.exit(main())"]


@pytest.fixture
def model_with(tmp_path):
    """model_with(sig text) -> a copy of the bundled model with that .sig beside it."""

    def make(sig: str) -> Path:
        model = tmp_path / "update" / "pneumo-v2.onnx"
        model.parent.mkdir(exist_ok=True)
        shutil.copy(DEFAULT_MODEL, model)
        signature_path(model).write_text(sig)
        return model

    return make


@pytest.mark.parametrize("sig", [DEEP_SIG, DEEP_OBJECT], ids=["lists", "in an object"])
def test_a_deep_signature_is_a_signature_error(model_with, sig):
    model = model_with(sig)
    with pytest.raises(SignatureError, match=f"cannot be read: nested more than {MAX_DEPTH} "
                                             "levels deep"):
        verify_model(model, RELEASE_PUBLIC_KEY)


def test_an_oversized_signature_is_a_signature_error(model_with):
    model = model_with('{"signature": "' + "A" * MAX_SIG_BYTES + '"}')
    with pytest.raises(SignatureError, match=f"larger than {MAX_SIG_BYTES} bytes"):
        verify_model(model, RELEASE_PUBLIC_KEY)


@pytest.mark.parametrize("sig, why", [
    (DEEP_SIG, f"nested more than {MAX_DEPTH} levels deep"),
    (DEEP, f"larger than {MAX_SIG_BYTES} bytes")], ids=["20000 deep", "100000 deep"])
def test_pneumo_model_install_refuses_a_deep_signature_in_one_line(model_with, tmp_path, sig,
                                                                   why):
    model = model_with(sig)
    data = tmp_path / "data"
    done = subprocess.run([*CLI, "model", "install", str(model), "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line == (f"error: refused: the signature file {signature_path(model)} cannot be "
                    f"read: {why}")
    assert active_entry(data) is None


def test_a_deep_installed_models_list_is_a_clean_refusal(tmp_path, capsys):
    data = tmp_path / "data"
    models_dir(data).mkdir(parents=True)
    (models_dir(data) / STATE_NAME).write_text('{"installed": ' + DEEP + "}")
    with pytest.raises(ModelStoreError, match="is damaged .nested more than"):
        active_entry(data)
    assert pneumo(["model", "status", "--data-dir", str(data)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is damaged (nested more than" in line


def _with_metadata(dst: Path, text: str) -> Path:
    import onnx

    m = onnx.load(str(DEFAULT_MODEL))
    next(p for p in m.metadata_props if p.key == METADATA_KEY).value = text
    onnx.save(m, str(dst))
    return dst


def test_deep_model_metadata_is_a_value_error_and_install_refuses_it(tmp_path, capsys):
    model = _with_metadata(tmp_path / "deep.onnx", '{"input_size": 224, "x": ' + DEEP + "}")
    for load in (OnnxModel, read_metadata):
        with pytest.raises(ValueError, match=f"'pneumo' metadata cannot be read: nested more "
                                             f"than {MAX_DEPTH} levels deep"):
            load(model)
    assert pneumo(["model", "install", str(model), "--allow-unsigned", "--data-dir",
                   str(tmp_path / "data")]) == 2
    assert "cannot be loaded as a pneumo model" in capsys.readouterr().err


def test_a_deep_site_thresholds_file_is_ignored_and_logged(tmp_path, caplog):
    (tmp_path / PROFILE_NAME).write_text('{"thresholds": ' + DEEP + "}")
    with caplog.at_level(logging.WARNING, logger="pneumo.app.clinic.site_profile"):
        assert SiteProfile(tmp_path).profile is None
    assert "nested more than" in caplog.text


def test_a_deep_instance_file_reads_as_none(tmp_path):
    lock = InstanceLock(tmp_path)
    lock.info_path.write_text(DEEP)
    assert lock.info() == {} and lock.remembered_port() is None
