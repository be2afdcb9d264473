"""Cold start of the built executable to the first answered prediction.

    python -m installer.measure [dist/pneumo-edge] [--runs 5] [--image PATH]

Each run: start the executable (fresh temp and data folders, --port 0 --no-browser), poll
/healthz until it answers, POST one real X-ray to /api/v1/predict, stop the clock at the
answer, then stop the executable with SIGTERM. Prints each time and the median.
Standard library only; loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXE = ROOT / "dist" / ("pneumo-edge.exe" if os.name == "nt" else "pneumo-edge")
DEFAULT_IMAGE = ROOT / "tests" / "fixtures" / "xray" / "NORMAL" / "IM-0117-0001.jpeg"
_LISTEN = re.compile(r"listening on (http://127\.0\.0\.1:\d+/)")


def _post(url: str, data: bytes) -> dict:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"x.jpeg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def cold_start(exe: Path, image: bytes) -> float:
    """Seconds from process start to the first answered prediction (one run)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TMPDIR=tmp, TMP=tmp, TEMP=tmp)
        kw = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {}
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(exe), "--port", "0", "--no-browser", "--data-dir",
                                 str(Path(tmp) / "data")], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env, **kw)
        url: list[str] = []
        ready = threading.Event()

        def read() -> None:
            for line in proc.stdout:
                m = _LISTEN.search(line)
                if m and not url:
                    url.append(m.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        try:
            if not ready.wait(60) or not url:
                raise RuntimeError("the executable did not start")
            while True:
                try:
                    with urllib.request.urlopen(url[0] + "healthz", timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.02)
            answer = _post(url[0] + "api/v1/predict", image)
            elapsed = time.perf_counter() - t0
            if "label" not in answer:
                raise RuntimeError(f"unexpected answer: {answer}")
        finally:
            proc.send_signal(signal.CTRL_BREAK_EVENT if os.name == "nt" else signal.SIGTERM)
            proc.wait(30)
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m installer.measure`."""
    p = argparse.ArgumentParser(prog="python -m installer.measure", description=__doc__.split("\n")[0])
    p.add_argument("exe", nargs="?", type=Path, default=DEFAULT_EXE)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    args = p.parse_args(argv)
    image = args.image.read_bytes()
    times = []
    for i in range(args.runs):
        times.append(cold_start(args.exe, image))
        print(f"run {i + 1}: {times[-1]:.2f} s", flush=True)
    print(f"median cold start to first prediction: {statistics.median(times):.2f} s "
          f"(min {min(times):.2f}, max {max(times):.2f}, {args.exe.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
