"""One app per data folder: a second launch (`pneumo serve --open-browser` or the executable's
launcher) opens the browser on the running app and exits 0; the port is remembered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from apptools import http, start_server

from pneumo.app.runtime.instance import INSTANCE_NAME, InstanceLock

REPO = Path(__file__).resolve().parents[3]


def _env(browser_log: Path | None) -> dict:
    """The environment of a second launch: a recording browser, or none at all."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = str(REPO)
    if browser_log is None:
        env["BROWSER"] = "false"  # a browser command that fails: nothing can be opened
    else:
        script = browser_log.with_suffix(".sh")
        script.write_text(f"#!/bin/sh\necho \"$1\" >> {browser_log}\n")
        script.chmod(0o755)
        env["BROWSER"] = f"{script} %s"
    return env


def _second(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=REPO)


def test_lock_is_exclusive_and_released(tmp_path):
    first, second = InstanceLock(tmp_path), InstanceLock(tmp_path)
    assert first.acquire()
    assert not second.acquire()
    first.publish(url="http://127.0.0.1:9/", port=9, token=False)
    first.release()
    assert json.loads((tmp_path / INSTANCE_NAME).read_text())["running"] is False
    assert second.acquire() and second.remembered_port() == 9
    second.release()


def test_second_serve_opens_the_running_app_and_exits_0(tmp_path, test_model_path):
    data = tmp_path / "data"
    server = start_server(test_model_path, data)
    try:
        log = tmp_path / "browser.log"
        cmd = [sys.executable, "-m", "pneumo.app", "serve", "--open-browser", "--data-dir",
               str(data), "--model", str(test_model_path)]
        run = _second(cmd, _env(log))
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"already running for the data folder {data} at {server.url}" in run.stdout
        assert log.read_text().split() == [server.url]  # the browser got the running app
        assert "listening on" not in run.stdout  # no second server
        nobrowser = _second(cmd, _env(None))
        assert nobrowser.returncode == 0
        assert f"open {server.url} in your browser" in nobrowser.stdout
        launcher = _second([sys.executable, str(REPO / "installer" / "entry.py"),
                            "--data-dir", str(data)], _env(log))
        assert launcher.returncode == 0, launcher.stdout + launcher.stderr
        assert log.read_text().split() == [server.url, server.url]
        assert "stopped" not in launcher.stdout
        assert http("GET", server.url + "healthz").status == 200  # the first one still serves
    finally:
        server.stop()


def test_the_port_is_remembered_across_restarts_and_after_a_crash(tmp_path, test_model_path):
    data = tmp_path / "data"
    first = start_server(test_model_path, data)  # --port 0: the OS picks one
    first.kill()  # a crash: the OS drops the lock
    again = start_server(test_model_path, data, port=None)  # no --port: the remembered one
    try:
        assert again.url == first.url
        assert http("GET", again.url + "healthz").status == 200
    finally:
        again.stop()
    assert json.loads((data / INSTANCE_NAME).read_text())["url"] == first.url
    lock = InstanceLock(data)
    assert lock.acquire()  # a stopped app holds no lock, whatever instance.json says
    lock.release()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_the_lock_files_are_private(tmp_path):
    lock = InstanceLock(tmp_path / "d")
    assert lock.acquire()
    try:
        assert oct((tmp_path / "d" / "app.lock").stat().st_mode & 0o777) == "0o600"
    finally:
        lock.release()
