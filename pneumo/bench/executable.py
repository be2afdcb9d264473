"""The packaged executable: size on disk and cold start to the first answered prediction.

Cold start = launch ``EXE --port N --no-browser --data-dir TMP``, poll ``/healthz`` until it
answers, post one image, stop the clock when the answer has arrived; then kill the process.
The first launch after a build may be slower (disk cache, a one-file unpack); every launch
is kept in the results and the median is reported.
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pneumo.bench.http_load import free_port, multipart_body, post, stop, wait_healthy
from pneumo.bench.models import REPO_ROOT

log = logging.getLogger(__name__)

DEFAULT_EXE = REPO_ROOT / "dist" / "pneumo-edge"


def find_executable(path: str | Path | None = None) -> Path | None:
    """The executable file: PATH itself, or PATH/<name>[.exe] for a one-folder build."""
    p = Path(path) if path else DEFAULT_EXE
    candidates = [p, p.with_suffix(".exe")]
    if p.is_dir():
        candidates = [p / p.name, p / f"{p.name}.exe"]
    for c in candidates:
        if c.is_file() and (os.access(c, os.X_OK) or c.suffix == ".exe"):
            return c
    return None


def tree_size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def cold_start(exe: Path, image: bytes, timeout: float = 120.0) -> dict:
    """One launch: seconds to /healthz and to the first prediction's answer."""
    port = free_port()
    body, ctype = multipart_body(image)
    with tempfile.TemporaryDirectory(prefix="pneumo-exe-") as tmp:
        log_path = Path(tmp) / "exe.log"
        with open(log_path, "wb") as sink:
            t0 = time.perf_counter()
            proc = subprocess.Popen([str(exe), "--port", str(port), "--no-browser",
                                     "--data-dir", str(Path(tmp) / "data")],
                                    stdout=sink, stderr=subprocess.STDOUT, cwd=tmp)
        try:
            try:
                wait_healthy(port, proc, timeout=timeout, interval=0.01)
            except Exception as exc:
                raise RuntimeError(f"{exc}; output: {log_path.read_text(errors='replace')[-1500:]}"
                                   ) from exc
            t_health = time.perf_counter() - t0
            status, reply = post(port, body, ctype, timeout=timeout)
            t_answer = time.perf_counter() - t0
        finally:
            stop(proc)
    if status != 200:
        raise RuntimeError(f"first prediction answered HTTP {status}: {reply[:300]!r}")
    return {"healthz_s": t_health, "first_prediction_s": t_answer}


def run(exe_path: str | Path | None, image: bytes, *, runs: int = 5) -> dict:
    """The executable section (skipped when no executable is found)."""
    exe = find_executable(exe_path)
    if exe is None:
        where = exe_path or DEFAULT_EXE
        return {"status": "skipped", "note": f"no executable at {where} (build it, or pass --exe)"}
    folder = exe.parent if exe.parent.name == exe.stem and exe.parent != REPO_ROOT / "dist" else exe
    launches = []
    for i in range(runs):
        r = cold_start(exe, image)
        log.info(f"  launch {i + 1}: /healthz {r['healthz_s']:.2f} s, first answer "
                 f"{r['first_prediction_s']:.2f} s")
        launches.append(r)
    return {
        "status": "ok",
        "path": str(exe),
        "platform": sys.platform,
        "exe_bytes": exe.stat().st_size,
        "bundle_bytes": tree_size(folder),
        "runs": runs,
        "launches": launches,
        "cold_start_median_s": statistics.median(r["first_prediction_s"] for r in launches),
        "healthz_median_s": statistics.median(r["healthz_s"] for r in launches),
        "notes": ["Cold start: process launch to the first prediction answered (2-megapixel "
                  "JPEG); median of the launches. The first launch may include disk-cache "
                  "misses."],
    }
