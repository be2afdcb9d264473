"""Start at login: the Linux XDG autostart entry, written into a temporary XDG_CONFIG_HOME,
valid for desktop-file-validate, and its command really starts the app."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from apptools import LISTENING_URL, http

from pneumo.app.runtime.autostart import desktop_exec

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG autostart")


def _run(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "installer" / "entry.py"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_desktop_exec_quoting():
    assert desktop_exec(["/opt/a b/x", "--data-dir", "/d/100%"]) == \
        '"/opt/a b/x" --data-dir /d/100%%'
    assert desktop_exec(['say "$HOME"']) == '"say \\"\\$HOME\\""'


def test_install_autostart_writes_a_valid_entry_that_starts_the_app(tmp_path):
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"), PYTHONPATH=str(REPO))
    data = tmp_path / "my data"
    done = _run("--install-autostart", "--data-dir", str(data), env=env)
    assert done.returncode == 0, done.stderr
    entry = tmp_path / "config" / "autostart" / "pneumo-edge.desktop"
    assert str(entry) in done.stdout
    text = entry.read_text()
    assert "Type=Application" in text and "Terminal=false" in text
    if shutil.which("desktop-file-validate"):
        check = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True,
                               text=True)
        assert check.returncode == 0 and not check.stdout.strip(), check.stdout
    exec_line = next(line[5:] for line in text.splitlines() if line.startswith("Exec="))
    cmd = shlex.split(exec_line.replace("%%", "%"))
    assert cmd[-2:] == ["--data-dir", str(data)]
    # what the desktop would run at login: the app starts on the data folder, no browser
    proc = subprocess.Popen([*cmd, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the autostart command exited"
            m = LISTENING_URL.search(line)  # "... listening on URL" in any language
            if m:
                url = m.group(1)
        assert url and http("GET", url + "healthz").status == 200
        assert (data / "history.sqlite3").is_file()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
    removed = _run("--remove-autostart", env=env)
    assert removed.returncode == 0 and not entry.exists()
    again = _run("--remove-autostart", env=env)
    assert again.returncode == 0 and "was not set to start at login" in again.stdout
