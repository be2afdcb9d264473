"""Signed model updates: keys, signatures, install (refusals, self-test, audit), rollback, and
the installed model served by `pneumo serve` and the executable's launcher."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from apptools import http, rewrite_model, start_server

from pneumo.app.history.schema import DB_NAME
from pneumo.app.history.store import HistoryStore
from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, file_sha256
from pneumo.app.updates.model_store import (
    ModelStoreError,
    active_entry,
    active_model,
    describe,
    install_model,
    rollback,
    serving_model,
)
from pneumo.app.updates.signing import (
    RELEASE_PUBLIC_KEY,
    SignatureError,
    generate_keys,
    sign_model,
    signature_path,
    verify_model,
)
from pneumo.cli import main as pneumo

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    """A test signing key pair (private, public)."""
    return generate_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def signed(tmp_path, keys) -> Path:
    """A copy of the bundled model, renamed by its metadata version and signed."""
    model = rewrite_model(DEFAULT_MODEL, tmp_path / "update" / "pneumo-v2.onnx", version="2.0-test")
    sign_model(model, keys[0])
    return model


def _audit(data_dir: Path, action: str) -> list[dict]:
    store = HistoryStore(data_dir / DB_NAME)
    try:
        return store.audit(action=action)
    finally:
        store.close()


def test_keys_generate_private_key_is_owner_only_and_never_overwritten(tmp_path, capsys):
    assert pneumo(["keys", "generate", "--out", str(tmp_path)]) == 0
    private = tmp_path / "pneumo-signing.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private.read_bytes()
    assert b"BEGIN PUBLIC KEY" in (tmp_path / "pneumo-signing.pub").read_bytes()
    before = private.read_bytes()
    assert pneumo(["keys", "generate", "--out", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert private.read_bytes() == before


def test_the_bundled_model_is_signed_with_the_release_key_inside_the_app():
    t0 = time.perf_counter()
    verified = verify_model(DEFAULT_MODEL, RELEASE_PUBLIC_KEY)
    elapsed_ms = (time.perf_counter() - t0) * 1000
    assert verified.sha256 == file_sha256(DEFAULT_MODEL)
    assert elapsed_ms < 2000, f"signature check took {elapsed_ms:.0f} ms"


def test_sign_and_verify_refuse_tampered_unsigned_and_foreign(tmp_path, keys, signed):
    assert verify_model(signed, keys[1]).sha256 == file_sha256(signed)
    with pytest.raises(SignatureError, match="signed with key|not the trusted key"):
        verify_model(signed, RELEASE_PUBLIC_KEY)  # signed by the test key, not the release key
    tampered = tmp_path / "tampered.onnx"
    data = bytearray(signed.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    shutil.copy(signature_path(signed), signature_path(tampered))
    with pytest.raises(SignatureError, match=r"tampered\.onnx\.sig does not match"):
        verify_model(tampered, keys[1])
    unsigned = tmp_path / "unsigned.onnx"
    shutil.copy(signed, unsigned)
    with pytest.raises(SignatureError, match=r"not signed: no signature file .*unsigned\.onnx\.sig"):
        verify_model(unsigned, keys[1])


def test_install_refuses_unsigned_and_tampered_and_changes_nothing(tmp_path, keys, signed,
                                                                   capsys):
    data = tmp_path / "data"
    unsigned = tmp_path / "unsigned.onnx"
    shutil.copy(signed, unsigned)
    assert pneumo(["model", "install", str(unsigned), "--trusted-key", str(keys[1]),
                   "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "unsigned.onnx.sig" in err
    data_bytes = bytearray(signed.read_bytes())
    data_bytes[-10] ^= 0xFF
    signed.write_bytes(bytes(data_bytes))
    assert pneumo(["model", "install", str(signed), "--trusted-key", str(keys[1]),
                   "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert "pneumo-v2.onnx.sig does not match" in err
    assert active_entry(data) is None and serving_model(None, str(data)) == DEFAULT_MODEL


def test_install_use_and_rollback(tmp_path, keys, signed, capsys):
    data = tmp_path / "data"
    assert pneumo(["model", "install", str(signed), "--trusted-key", str(keys[1]),
                   "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "signature: ok" in out and "-> NORMAL" in out and "-> PNEUMONIA" in out
    sha = file_sha256(signed)
    installed = active_model(data)
    assert installed is not None and installed.parent == data / "models"
    assert file_sha256(installed) == sha
    assert serving_model(None, str(data)) == installed
    assert serving_model(str(DEFAULT_MODEL), str(data)) == DEFAULT_MODEL  # --model wins
    source = describe(installed, data)
    assert source["source"] == "installed" and source["text"].startswith("installed on 20")
    (row,) = _audit(data, "model_install")
    assert row["new"]["sha256"] == sha and row["new"]["version"] == "2.0-test"
    assert row["old"]["source"] == "bundled"
    assert row["old"]["sha256"] == file_sha256(DEFAULT_MODEL)
    assert row["by"] and row["at"].startswith("20")

    assert pneumo(["model", "rollback", "--data-dir", str(data)]) == 0
    assert "rolled back from" in capsys.readouterr().out
    assert serving_model(None, str(data)) == DEFAULT_MODEL
    (back,) = _audit(data, "model_rollback")
    assert back["old"]["sha256"] == sha and back["new"]["source"] == "bundled"
    assert pneumo(["model", "rollback", "--data-dir", str(data)]) == 2
    assert "nothing to roll back" in capsys.readouterr().err


def test_install_reads_the_model_file_once(tmp_path, keys, signed, monkeypatch):
    """The bytes verified are the bytes loaded, self-tested and copied: the file is opened
    once, so a file swapped after the signature check cannot be installed."""
    import builtins
    import io

    opened = []
    real_open = io.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file).resolve() == signed.resolve():
            opened.append(args[0] if args else kwargs.get("mode", "r"))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    data = tmp_path / "data"
    install_model(signed, data, trusted_key=keys[1])
    assert opened == ["rb"]
    installed = data / "models" / active_entry(data)["file"]
    assert installed.read_bytes() == signed.read_bytes()


def test_install_keeps_the_previous_installed_model(tmp_path, keys, signed):
    data = tmp_path / "data"
    first = install_model(signed, data, trusted_key=keys[1]).entry
    second_model = rewrite_model(DEFAULT_MODEL, tmp_path / "v3.onnx", version="3.0-test")
    sign_model(second_model, keys[0])
    second = install_model(second_model, data, trusted_key=keys[1])
    assert second.previous["sha256"] == first["sha256"]
    assert active_entry(data)["version"] == "3.0-test"
    left, now = rollback(data)
    assert left["version"] == "3.0-test" and now["sha256"] == first["sha256"]
    assert active_model(data) == data / "models" / first["file"]


def test_a_model_that_mislabels_a_reference_xray_is_refused(tmp_path, keys):
    model = rewrite_model(DEFAULT_MODEL, tmp_path / "bad.onnx",
                          thresholds={"balanced": 0.0001, "screening": 0.0001})
    sign_model(model, keys[0])
    with pytest.raises(ModelStoreError, match="self-test failed: the model calls the NORMAL "
                                              "reference X-ray IM-0115-0001.jpeg PNEUMONIA"):
        install_model(model, tmp_path / "data", trusted_key=keys[1])
    assert active_entry(tmp_path / "data") is None


def test_an_incompatible_model_is_refused(tmp_path, keys):
    model = rewrite_model(DEFAULT_MODEL, tmp_path / "odd.onnx",
                          thresholds={"balanced": 0.4})  # no "screening" mode
    sign_model(model, keys[0])
    with pytest.raises(ModelStoreError, match="not compatible.*screening"):
        install_model(model, tmp_path / "data", trusted_key=keys[1])


def test_allow_unsigned_installs_and_is_audited(tmp_path):
    data = tmp_path / "data"
    model = rewrite_model(DEFAULT_MODEL, tmp_path / "local.onnx", version="local")
    done = install_model(model, data, allow_unsigned=True, by="it-admin")
    assert "NOT checked" in done.lines[0]
    (row,) = _audit(data, "model_install")
    assert row["new"]["unsigned"] is True and row["new"]["signed_by"] is None
    assert row["by"] == "it-admin"


def test_a_changed_installed_file_stops_the_start(tmp_path, keys, signed):
    data = tmp_path / "data"
    entry = install_model(signed, data, trusted_key=keys[1]).entry
    path = data / "models" / entry["file"]
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ModelStoreError, match="changed after it was installed"):
        serving_model(None, str(data))


def test_pneumo_serve_uses_the_installed_model_and_healthz_says_so(tmp_path, keys, signed):
    data = tmp_path / "data"
    install_model(signed, data, trusted_key=keys[1])
    server = start_server(None, data)
    try:
        body = json.loads(http("GET", server.url + "healthz").body)
        page = http("GET", server.url).body.decode()
    finally:
        server.stop()
    assert body["model"]["version"] == "2.0-test"
    assert body["model"]["sha256"] == file_sha256(signed)
    assert body["model"]["source"]["source"] == "installed"
    assert "Source: installed on 20" in page
    (line,) = [line for line in server.lines if line.startswith("model:")]
    assert line.startswith("model: ") and "2.0-test (installed on 20" in line
    assert str(tmp_path) not in line  # no file path: the data folder is on the history line


def test_executable_launcher_installs_and_reports_the_installed_model(tmp_path, keys, signed):
    data = tmp_path / "data"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    entry = [sys.executable, str(REPO / "installer" / "entry.py")]
    done = subprocess.run([*entry, "--install-model", str(signed), "--trusted-key", str(keys[1]),
                           "--data-dir", str(data)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "installed: " in done.stdout
    version = subprocess.run([*entry, "--version", "--data-dir", str(data)],
                             capture_output=True, text=True, env=env, timeout=120)
    assert f"sha256 {file_sha256(signed)}" in version.stdout
    refused = subprocess.run([*entry, "--install-model", str(signed), "--data-dir",
                              str(data)], capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 2 and "not the trusted key" in refused.stderr
