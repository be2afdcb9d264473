"""HTTP end to end: a real Waitress server in a subprocess, a closed-loop load generator.

The server is `python -m pneumo.cli serve` bound to 127.0.0.1 on a free port (its own
process: its own GIL, and an RSS we can read). Each client thread keeps one HTTP/1.1
connection and posts the same 2-megapixel JPEG to ``POST /api/v1/predict`` (multipart field
``image``) back to back until the time or request budget of the level is spent.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pneumo.bench.timing import summarize

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
PREDICT_PATH = "/api/v1/predict"
HEALTH_PATH = "/healthz"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def multipart_body(data: bytes, field: str = "image", filename: str = "xray.jpeg",
                   fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data upload of one file."""
    boundary = "----pneumobench" + uuid.uuid4().hex
    parts = []
    for name, value in (fields or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f"{value}\r\n".encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                 f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 .encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of one GET to 127.0.0.1:port."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def post(port: int, body: bytes, ctype: str, timeout: float = 60.0) -> tuple[int, bytes]:
    """(status, body) of one upload to the predict endpoint."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", PREDICT_PATH, body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_healthy(port: int, proc: subprocess.Popen | None, timeout: float = 120.0,
                 interval: float = 0.02) -> float:
    """Poll GET /healthz until 200; seconds waited. Raises if the process dies or time runs out."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before /healthz")
        try:
            status, _ = get(port, HEALTH_PATH, timeout=2.0)
            if status == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"no /healthz answer on port {port} within {timeout:.0f} s")


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate a process we started, killing it if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process and its children (None without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        p = psutil.Process(pid)
        return int(p.memory_info().rss + sum(c.memory_info().rss
                                             for c in p.children(recursive=True)))
    except psutil.Error:
        return None


@dataclass
class Server:
    """A running `pneumo serve` subprocess."""

    proc: subprocess.Popen
    port: int
    log_path: Path
    startup_s: float

    def log_tail(self, n: int = 2000) -> str:
        """The end of the server's output."""
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def serve_available() -> bool:
    """Whether the clinic app (`pneumo.app.web.app` and the `serve` subcommand) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("pneumo.app.web.app", "pneumo.app.runtime.server", "pneumo.app.runtime.cli", "waitress"))


def start_server(model_path: Path, tmp: Path, threads: int | None = None) -> Server:
    """Start `python -m pneumo.cli serve` on a free loopback port and wait for /healthz."""
    port = free_port()
    data_dir = tmp / f"serve-data-{port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pneumo.cli", "serve", "--host", HOST, "--port", str(port),
           "--model", str(model_path), "--data-dir", str(data_dir)]
    if threads:
        cmd += ["--threads", str(threads)]
    log_path = tmp / f"serve-{port}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log_path, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=repo)
    srv = Server(proc, port, log_path, 0.0)
    try:
        srv.startup_s = wait_healthy(port, proc)
    except Exception as exc:
        stop(proc)
        raise RuntimeError(f"{exc}; server output:\n{srv.log_tail()}") from exc
    return srv


def closed_loop(port: int, body: bytes, ctype: str, clients: int, duration_s: float,
                max_requests: int, timeout: float = 60.0) -> dict:
    """`clients` threads posting back to back for `duration_s` or `max_requests` in total."""
    lock = threading.Lock()
    issued = [0]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    start = time.perf_counter()
    deadline = start + duration_s
    ends: list[float] = []

    def worker() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        try:
            while time.perf_counter() < deadline:
                with lock:
                    if issued[0] >= max_requests:
                        break
                    issued[0] += 1
                t0 = time.perf_counter()
                try:
                    conn.request("POST", PREDICT_PATH, body=body,
                                 headers={"Content-Type": ctype})
                    resp = conn.getresponse()
                    resp.read()
                    status = resp.status
                except (OSError, http.client.HTTPException) as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                        statuses["exception"] = statuses.get("exception", 0) + 1
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
                    continue
                ms = (time.perf_counter() - t0) * 1000.0
                with lock:
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
                    if status == 200:
                        latencies.append(ms)
                    else:
                        errors.append(f"HTTP {status}")
                if resp.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        finally:
            conn.close()
            with lock:
                ends.append(time.perf_counter())

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration_s + timeout + 5)
    elapsed = (max(ends) if ends else time.perf_counter()) - start
    ok = len(latencies)
    return {
        "clients": clients,
        "duration_s": elapsed,
        "requests": issued[0],
        "ok": ok,
        "errors": issued[0] - ok,
        "statuses": statuses,
        "error_examples": sorted(set(errors))[:5],
        "throughput_rps": ok / elapsed if elapsed > 0 else 0.0,
        "latency": summarize(latencies).to_dict() if latencies else None,
    }


def run(model_path: Path | None, image: bytes, tmp: Path, *, clients: tuple[int, ...] = (1, 4, 8),
        duration_s: float = 10.0, max_requests: int = 5000, warmup: int = 3,
        model_note: str = "") -> dict:
    """The HTTP section: start a server, warm it up, run each client level, read its RSS."""
    if not serve_available():
        return {"status": "skipped", "note": "the clinic app (pneumo.app.web.app / pneumo.app.runtime.server / "
                                             "`pneumo serve`) is not installed"}
    if model_path is None:
        return {"status": "skipped", "note": "no ONNX model with pneumo metadata to serve"
                + (f" ({model_note})" if model_note else "")}
    body, ctype = multipart_body(image)
    srv = start_server(model_path, tmp)
    log.info(f"  server up on 127.0.0.1:{srv.port} in {srv.startup_s:.2f} s")
    try:
        rss = {"after_start": rss_bytes(srv.proc.pid)}
        warm: list[float] = []
        for _ in range(warmup):
            t0 = time.perf_counter()
            status, reply = post(srv.port, body, ctype)
            warm.append((time.perf_counter() - t0) * 1000.0)
            if status != 200:
                raise RuntimeError(f"warm-up upload answered HTTP {status}: {reply[:300]!r}")
        timings = json.loads(reply).get("timings_ms")
        rss["after_warmup"] = rss_bytes(srv.proc.pid)
        levels = []
        for c in clients:
            before = rss_bytes(srv.proc.pid)
            res = closed_loop(srv.port, body, ctype, c, duration_s, max_requests)
            res["rss_before"] = before
            res["rss_after"] = rss_bytes(srv.proc.pid)
            lat = res["latency"] or {}
            log.info(f"  {c} client(s): {res['ok']} ok / {res['errors']} errors in "
                     f"{res['duration_s']:.1f} s, {res['throughput_rps']:.1f} req/s, "
                     f"p50 {lat.get('p50', float('nan')):.1f} ms")
            levels.append(res)
        rss["after_load"] = rss_bytes(srv.proc.pid)
    finally:
        stop(srv.proc)
    return {
        "status": "ok",
        "server": {"command": "python -m pneumo.cli serve --host 127.0.0.1", "port": srv.port,
                   "startup_s": srv.startup_s, "model": str(model_path),
                   "model_note": model_note},
        "upload_bytes": len(image),
        "request_bytes": len(body),
        "warmup_ms": warm,
        "server_timings_ms_last_warmup": timings,
        "duration_s": duration_s,
        "max_requests": max_requests,
        "levels": levels,
        "rss_bytes": rss,
        "notes": ["Closed loop: each client sends its next request when the previous answer "
                  "arrives; latency is client-side, upload to full JSON answer, HTTP 200 only.",
                  "RSS: the server process (and children), read with psutil."],
    }
