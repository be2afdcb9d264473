"""Latency of POST /api/v1/predict against a real Waitress server (a script, not a test).

    PNEUMO_TEST_MODEL=path/to/model.onnx python tests/app/web/measure_latency.py [N]

Uploads one ~2-megapixel JPEG (a fixture X-ray enlarged to 1732 x 1155 with film grain) N
times (default 50, after 3 warm-up requests), one at a time, and prints p50/p95 of the
client-side wall time and of the server's own timings.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from apptools import XRAY_NORMAL, encode, post_image, start_server  # noqa: E402
from PIL import Image  # noqa: E402


def two_megapixel_jpeg() -> bytes:
    """A 1732 x 1155 (2.0 MP) grayscale JPEG made from a fixture X-ray."""
    img = Image.open(XRAY_NORMAL).convert("L").resize((1732, 1155), Image.BICUBIC)
    a = np.asarray(img, dtype=np.float32)
    a += np.random.default_rng(0).normal(0, 3, a.shape)
    return encode(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), "JPEG", quality=92)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def main(n: int = 50) -> None:
    """Run the measurement and print a summary."""
    from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL

    model = Path(os.environ.get("PNEUMO_TEST_MODEL", str(DEFAULT_MODEL)))
    data = two_megapixel_jpeg()
    with tempfile.TemporaryDirectory() as tmp:
        srv = start_server(model, Path(tmp))
        try:
            for _ in range(3):
                assert post_image(srv.url, data).status == 200
            wall, server = [], {}
            for _ in range(n):
                t = time.perf_counter()
                r = post_image(srv.url, data)
                wall.append((time.perf_counter() - t) * 1000)
                assert r.status == 200, r.body
                for k, v in r.json()["timings_ms"].items():
                    server.setdefault(k, []).append(v)
        finally:
            srv.stop()
    print(f"model {model} | JPEG {len(data) / 1024:.0f} kB, 1732 x 1155 | {n} requests")
    print(f"client wall ms: p50 {statistics.median(wall):.1f}  p95 {pct(wall, 95):.1f}  "
          f"max {max(wall):.1f}")
    for k, v in server.items():
        print(f"  server {k:14s} p50 {statistics.median(v):7.2f}  p95 {pct(v, 95):7.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
