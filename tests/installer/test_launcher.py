"""The launcher without a console (installer/entry.py, run unfrozen as the tests do):

- ``--log-file`` / ``$PNEUMO_LOG_FILE`` and the windowed program's missing sys.stdout /
  sys.stderr send the log and every printed line to a rotating file (in the data folder
  when no file is named), and printing never fails;
- ``--stop`` asks the app serving a data folder to stop (POST /api/v1/shutdown) and waits
  until it has gone; an app without that request gets SIGTERM (Linux, macOS);
- start at login from the console twin (pneumo-edge-console.exe) starts the windowed program.

The built executable's windowed and console programs are only made on Windows (hosted
workflow); these tests run the same code unfrozen.
"""

from __future__ import annotations

import http.server
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from installer import entry
from pneumo.app.runtime import logs
from pneumo.app.runtime.instance import InstanceLock

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "installer" / "entry.py"
NO_CONSOLE = (  # what the windowed Windows program sees: no sys.stdout / sys.stderr
    "import runpy, sys; sys.stdout = sys.stderr = None; sys.argv = sys.argv[1:];"
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for name in ("PNEUMO_DATA_DIR", entry.LOG_FILE_ENV):
        env.pop(name, None)
    return env


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 90.0) -> str:
    """The file's text once it contains ``text`` (fails if the process ends first)."""
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text(errors="replace") if path.is_file() else ""
        if text in content:
            return content
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{content}"
        assert time.monotonic() < deadline, f"no {text!r} in {path}:\n{content}"
        time.sleep(0.1)


def _healthz(content: str) -> None:
    url = content.split("listening on ", 1)[1].split()[0]
    with urllib.request.urlopen(url + "healthz", timeout=10) as resp:
        assert resp.status == 200


def _stop(data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ENTRY), "--stop", "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=120, env=_env())


def _serve(tmp_path: Path, *args: str, no_console: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, str(ENTRY), "--port", "0", "--no-browser", *args]
    if no_console:
        cmd = [sys.executable, "-c", NO_CONSOLE, *cmd[1:]]
    return subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return out


def _serve_then_stop(tmp_path: Path, data: Path, log_file: Path, *args: str,
                     no_console: bool = False, while_running=None):
    """Start the launcher on ``data``, wait for its last start-up line (it names Ctrl+C in
    every language) in ``log_file``, run ``while_running(content)``, then ``--stop`` it.

    Returns (process, its console output, the --stop result, what while_running returned).
    """
    proc = _serve(tmp_path, "--data-dir", str(data), *args, no_console=no_console)
    try:
        content = _wait_for(log_file, "Ctrl+C", proc)
        extra = while_running(content) if while_running else None
        stopped = _stop(data)
    finally:
        out = _finish(proc)
    return proc, out, stopped, extra


def test_log_file_flag_gets_the_start_up_lines_and_the_stop(tmp_path):
    data, log_file = tmp_path / "data", tmp_path / "logs" / "app.log"
    proc, out, stopped, _ = _serve_then_stop(tmp_path, data, log_file, "--log-file",
                                             str(log_file), while_running=_healthz)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "pneumo-edge stopped" in stopped.stdout
    assert "SIGTERM" not in stopped.stdout  # stopped through the app's own POST /api/v1/shutdown
    assert proc.returncode == 0, out
    assert out.strip() == f"pneumo-edge: log in {log_file}"  # the console says where, only
    content = log_file.read_text()
    for line in ("INFO stdout: pneumo clinic app listening on http://127.0.0.1:",
                 f"INFO stdout: history: {data / 'history.sqlite3'}",
                 "INFO pneumo.app.pipeline.onnx_model: model ",  # the log records, in the same file
                 "INFO stdout: pneumo-edge stopped"):
        assert line in content, content
    assert not (data / "logs").exists()  # only the named file


def test_without_console_the_log_goes_to_the_data_folder(tmp_path):
    """sys.stdout/sys.stderr None (the windowed program): nothing crashes, the log is kept."""
    data = tmp_path / "data"
    log_file = data / "logs" / entry.LOG_NAME
    proc, out, stopped, _ = _serve_then_stop(tmp_path, data, log_file, no_console=True,
                                             while_running=_healthz)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert proc.returncode == 0, out + log_file.read_text()
    assert out == ""
    content = log_file.read_text()
    assert "pneumo clinic app listening on http://127.0.0.1:" in content
    assert "INFO stdout: pneumo-edge stopped" in content


def test_without_console_a_usage_error_is_logged(tmp_path):
    env = dict(_env(), PNEUMO_DATA_DIR=str(tmp_path / "data"))
    res = subprocess.run([sys.executable, "-c", NO_CONSOLE, str(ENTRY), "--no-such-flag"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2 and res.stdout == res.stderr == ""
    content = (tmp_path / "data" / "logs" / entry.LOG_NAME).read_text()
    assert "unrecognized arguments: --no-such-flag" in content


def test_self_test_with_log_file_from_the_environment(tmp_path):
    log_file = tmp_path / "self-test.log"
    env = dict(_env(), **{entry.LOG_FILE_ENV: str(log_file)})
    res = subprocess.run([sys.executable, str(ENTRY), "--self-test"], capture_output=True,
                         text=True, env=env, timeout=180, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "self-test passed" in log_file.read_text()
    assert "self-test passed" not in res.stdout


def test_stop_when_nothing_runs_creates_nothing(tmp_path):
    res = _stop(tmp_path / "none")
    assert res.returncode == 0 and "not running" in res.stdout, res.stdout + res.stderr
    assert not (tmp_path / "none").exists()


class _ShutdownHandler(http.server.BaseHTTPRequestHandler):
    """A stand-in app: answers POST /api/v1/shutdown, then gives up the data folder."""

    seen: list[tuple[str, str, str | None]] = []
    lock: InstanceLock | None = None

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        type(self).seen.append((self.command, self.path, self.headers.get("Authorization")))
        ok = self.path == "/" + entry.STOP_PATH
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"stopping": true}' if ok else b"{}")
        if ok and type(self).lock is not None:
            threading.Timer(0.3, type(self).lock.release).start()

    def log_message(self, *args) -> None:
        """Quiet."""


def test_stop_asks_the_app_and_waits_until_it_has_gone(tmp_path, capsys):
    data = tmp_path / "data"
    lock = InstanceLock(data)
    assert lock.acquire()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ShutdownHandler)
    _ShutdownHandler.seen, _ShutdownHandler.lock = [], lock
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        lock.publish(url=url, port=server.server_address[1], token=True)
        assert entry.stop_running(str(data), token="t0k") == 0
    finally:
        server.shutdown()
        lock.release()
    assert _ShutdownHandler.seen == [("POST", "/api/v1/shutdown", "Bearer t0k")]
    out = capsys.readouterr().out
    assert "asked the app at" in out and "pneumo-edge stopped" in out
    assert InstanceLock(data).info()["running"] is False


def test_log_writer_turns_printed_lines_into_records(tmp_path):
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test-launcher-writer")
    logger.propagate = False
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    w = logs.LogWriter(logger, logging.WARNING)
    print("one", "two", file=w)
    print("partial", end="", file=w)
    assert [r.getMessage() for r in records] == ["one two"]
    w.flush()
    print("a\r\n\nb", file=w)
    assert [r.getMessage() for r in records] == ["one two", "partial", "a", "b"]
    assert {r.levelno for r in records} == {logging.WARNING}
    assert not w.isatty() and w.writable() and not w.closed
    with pytest.raises(OSError):
        w.fileno()


def test_log_file_rotates(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "LOG_MAX_BYTES", 2000)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, sys.stdout, sys.stderr)
    try:
        handler = logs.setup_file_logging(tmp_path / "logs" / "x.log")
        for i in range(400):
            print(f"line {i:04d} " + "x" * 40)
        handler.flush()
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
            h.close()
        handlers, level, sys.stdout, sys.stderr = saved
        root.handlers[:] = handlers
        root.setLevel(level)
    names = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert names == ["x.log", "x.log.1", "x.log.2", "x.log.3"]
    assert all(p.stat().st_size <= 2000 for p in (tmp_path / "logs").iterdir())
    assert "line 0399" in (tmp_path / "logs" / "x.log").read_text()


def test_console_detection(monkeypatch):
    assert entry.has_console()  # pytest's captured streams count as a console
    monkeypatch.setattr(sys, "stdout", None)
    assert not entry.has_console()


def test_autostart_from_the_console_twin_starts_the_windowed_program(tmp_path):
    from pneumo.app.runtime.autostart import app_executable

    console = tmp_path / "pneumo-edge-console.exe"
    console.write_bytes(b"")
    assert app_executable(str(console)) == str(console)  # no windowed program beside it
    (tmp_path / "pneumo-edge.exe").write_bytes(b"")
    assert app_executable(str(console)) == str(tmp_path / "pneumo-edge.exe")
    assert app_executable(str(tmp_path / "pneumo-edge.exe")) == str(tmp_path / "pneumo-edge.exe")


def test_launcher_lines_follow_lang(tmp_path):
    """--lang fr: the start-up, second-launch and stop lines of the launcher are French."""
    data, log_file = tmp_path / "data", tmp_path / "app.log"

    def second_launch(_content: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ENTRY), "--no-browser", "--lang", "fr",
                               "--data-dir", str(data)], capture_output=True, text=True,
                              timeout=120, env=_env())

    proc, out, stopped, second = _serve_then_stop(tmp_path, data, log_file, "--log-file",
                                                  str(log_file), "--lang", "fr",
                                                  while_running=second_launch)
    content = log_file.read_text()
    first = next(line for line in content.splitlines() if "INFO stdout: " in line)
    assert first.rstrip("/").rsplit(" ", 1)[1].startswith("http://127.0.0.1:"), first
    assert proc.returncode == 0 and stopped.returncode == 0, out
    assert second.returncode == 0 and "pneumo fonctionne déjà" in second.stdout, second.stdout
    assert "INFO stdout: pneumo-edge arrêté" in content, content
    assert "listening on" not in content  # the first line is French too (URL last)
