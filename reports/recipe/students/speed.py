"""A trained student next to the shipped pair, in one run: int8 ms on 1 and 2 threads (batch 1),
HTTP p50 of `POST /api/v1/predict` with a 2-megapixel JPEG (one client, closed loop) and the
request path of that upload step by step (pneumo.bench.request_path: p50 of the API's laps over
100 uploads after 10 warm-ups), each model served by its own real Waitress server on loopback.
Run from the repository root on an idle machine:

    python reports/recipe/students/speed.py runs/students/export-stem4-224-T2-s1/model.int8.onnx \
        --out reports/recipe/students/speed-stem4-224-T2-s1.json
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, OnnxModel
from pneumo.bench import http_load, preprocessing, request_path
from pneumo.bench.architectures import measure_file
from pneumo.bench.machine import machine_info
from pneumo.bench.timing import Settings


def main() -> int:
    """Measure the student and the pair; print and write the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("student", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--http-seconds", type=float, default=20.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings(warmup=5, repeat=200, min_repeat=50, max_seconds=10.0)
    image = preprocessing.inputs()["jpeg_8bit"]
    rows = {}
    for name, path in (("pair", DEFAULT_MODEL), ("student", args.student)):
        size = OnnxModel(path).input_size
        row = measure_file(name, Path(path), size, settings, precision="int8")
        with tempfile.TemporaryDirectory() as tmp:
            http = http_load.run(Path(path), image, Path(tmp), clients=(1,),
                                 duration_s=args.http_seconds, max_requests=2000)
        level = http["levels"][0]
        row["http_p50_ms"] = level["latency"]["p50"]
        row["http_rps_1_client"] = level["throughput_rps"]
        with tempfile.TemporaryDirectory() as tmp:
            row["request_path"] = request_path.profile_model(Path(path), image, Path(tmp))
        rows[name] = row
    result = {"machine": machine_info(), "rows": rows,
              "x_faster_1_thread": rows["pair"]["ms_1t"] / rows["student"]["ms_1t"],
              "x_lower_http_p50": rows["pair"]["http_p50_ms"] / rows["student"]["http_p50_ms"]}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"model, 1 thread: pair {rows['pair']['ms_1t']:.2f} ms, student "
          f"{rows['student']['ms_1t']:.2f} ms ({result['x_faster_1_thread']:.1f} x); HTTP p50: "
          f"pair {rows['pair']['http_p50_ms']:.1f} ms, student {rows['student']['http_p50_ms']:.1f} "
          f"ms ({result['x_lower_http_p50']:.1f} x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
