"""Where one upload's time goes: `POST /api/v1/predict` of a 2-megapixel JPEG, step by step.

Each model is served by its own real `pneumo serve` (Waitress on loopback, the app's own
settings); one client sends the same upload N times after a warm-up. Per request the API's
own laps (``timings_ms``: multipart upload, decode, image checks, preprocessing, inference,
orientation, OOD and label, heatmap packing, drift check, history commit) are read from the
answer, and the client's wall time is measured; "HTTP and framework" is the wall time minus
the server's total (Waitress, routing, the JSON answer, the sockets). The model's bare
ONNX Runtime session (1 thread, batch 1, the same input) is timed in the same run, so the
"inference" lap can be told apart from the session itself.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np

from pneumo.bench import http_load
from pneumo.bench.timing import Settings, measure

log = logging.getLogger(__name__)

STEPS = ("upload", "decode", "checks", "preprocess", "inference", "orientation",
         "ood_and_label", "heatmap", "preview", "drift", "save")
"""The API's laps, in request order (``timings_ms``; ``total`` is their sum)."""


def bare_session_ms(model_path: Path, settings: Settings) -> float:
    """p50 ms of the model's ONNX Runtime session alone (1 thread, batch 1)."""
    from pneumo.app.pipeline.onnx_model import INPUT_NAME, OnnxModel

    model = OnnxModel(model_path, intra_op_threads=1, inter_op_threads=1)
    x = np.random.default_rng(0).random((1, model.input_size, model.input_size, 1),
                                        dtype=np.float32)
    return measure(lambda: model.session.run(None, {INPUT_NAME: x}), settings).p50


def profile_model(model_path: Path, image: bytes, tmp: Path, *, requests: int = 100,
                  warmup: int = 10) -> dict:
    """One model's request path: p50 of each lap, of the server total and of the wall time."""
    body, ctype = http_load.multipart_body(image)
    srv = http_load.start_server(model_path, tmp)
    laps: dict[str, list[float]] = {}
    wall: list[float] = []
    try:
        for i in range(warmup + requests):
            t0 = time.perf_counter()
            status, reply = http_load.post(srv.port, body, ctype)
            ms = (time.perf_counter() - t0) * 1000.0
            if status != 200:
                raise RuntimeError(f"upload answered HTTP {status}: {reply[:300]!r}")
            if i < warmup:
                continue
            wall.append(ms)
            for k, v in json.loads(reply)["timings_ms"].items():
                laps.setdefault(k, []).append(float(v))
    finally:
        http_load.stop(srv.proc)
    p50 = {k: statistics.median(v) for k, v in laps.items()}
    frame = [w - t for w, t in zip(wall, laps["total"], strict=True)]
    return {"model": str(model_path), "requests": requests, "warmup": warmup,
            "laps_p50_ms": {k: p50[k] for k in (*STEPS, "total") if k in p50},
            "http_and_framework_p50_ms": statistics.median(frame),
            "wall_p50_ms": statistics.median(wall),
            "wall_p95_ms": float(np.percentile(wall, 95))}


def run(models: dict[str, Path], image: bytes, tmp: Path, *, requests: int = 100,
        settings: Settings | None = None) -> dict:
    """The request path of each named model, in one run (the bench section)."""
    if not http_load.serve_available():
        return {"status": "skipped", "note": "the clinic app is not installed"}
    settings = settings or Settings(warmup=5, repeat=200, min_repeat=20, max_seconds=5.0)
    rows = {}
    for name, path in models.items():
        log.info(f"  request path of {name} ({path}) ...")
        row = profile_model(Path(path), image, tmp, requests=requests)
        row["bare_session_p50_ms"] = bare_session_ms(Path(path), settings)
        rows[name] = row
        log.info(f"  {name}: wall p50 {row['wall_p50_ms']:.1f} ms, server total "
                 f"{row['laps_p50_ms']['total']:.1f}, inference lap "
                 f"{row['laps_p50_ms'].get('inference', float('nan')):.2f} (bare session "
                 f"{row['bare_session_p50_ms']:.2f})")
    return {"status": "ok", "upload_bytes": len(image), "models": rows,
            "notes": ["Sequential uploads, one client, a fresh server and data folder per "
                      "model; p50 over the requests after the warm-up. The laps do not add "
                      "up to the wall time: each lap's p50 is taken on its own."]}


def markdown(section: dict) -> str:
    """The request-path table: one column per model, one row per step."""
    if section.get("status") != "ok":
        return f"Request path: {section.get('status')} ({section.get('note', '')})\n"
    names = list(section["models"])
    rows = section["models"]
    out = ["| step (p50 ms) | " + " | ".join(names) + " |",
           "|---|" + "---:|" * len(names)]
    steps = [s for s in (*STEPS, "total") if any(s in rows[n]["laps_p50_ms"] for n in names)]
    for s in steps:
        out.append(f"| {s} | " + " | ".join(
            f"{rows[n]['laps_p50_ms'][s]:.2f}" if s in rows[n]["laps_p50_ms"] else "-"
            for n in names) + " |")
    for key, label in (("http_and_framework_p50_ms", "HTTP and framework"),
                       ("wall_p50_ms", "**client wall time**"),
                       ("wall_p95_ms", "client wall time p95"),
                       ("bare_session_p50_ms", "bare ONNX session (same run)")):
        out.append(f"| {label} | " + " | ".join(f"{rows[n][key]:.2f}" for n in names) + " |")
    return "\n".join(out) + "\n"
