"""Archive scoring, measured: images/s on the same images for the local engine (1 and 2
processes) and the Ray engine (1 and 2 actors on a Ray of this machine), and where the time
goes (decode, checks, model, the rest of a file's own time, and the engine's overhead).

    python -m pneumo.bench.scaling --out DIR [--n 2000] [--model FILE]

`measure` returns a dict (also DIR/scaling.json) and `markdown` its table (DIR/scaling.md).
Needs the ``[scale]`` extra. The engines are called directly on the same list of files (no
resume, no output folder), so every configuration scores every image.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DEFAULT_SOURCES = ("../shared/data/chest_xray/train", "../shared/data/external_val")
"""Training and external-validation images (read only)."""
CONFIGS = (("local", 1), ("local", 2), ("ray", 1), ("ray", 2))

log = logging.getLogger(__name__)


def pick_images(sources: Sequence[str], n: int = 2000) -> list[str]:
    """n image paths, the same every time: an even spread over the sources' sorted files,
    repeated when they hold fewer than n."""
    from pneumo.scale.manifest import list_inputs

    found = list_inputs([s for s in sources if Path(s).exists()])
    if not found:
        raise FileNotFoundError(f"no images in {', '.join(sources)}")
    step = max(1, len(found) // n)
    picked = found[::step][:n]
    while len(picked) < n:  # fewer than n images: repeat them
        picked += found[:n - len(picked)]
    return picked


def _engine(engine: str, items: list[dict], workers: int, model_path: str, info: dict):
    if engine == "ray":
        from pneumo.scale.ray_engine import score_ray

        return score_ray(items, model_path=model_path, mode="balanced", actors=workers,
                         shutdown=False, info=info)
    from pneumo.scale.local import score_local

    return score_local(items, model_path=model_path, mode="balanced", workers=workers,
                       info=info)


def _run(engine: str, workers: int, items: list[dict], model_path: str) -> tuple[dict, list]:
    """One configuration: its figures and its rows."""
    info: dict = {}
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    first = last = None
    rows = []
    for row in _engine(engine, items, workers, model_path, info):
        last = time.perf_counter()
        first = first or last
        rows.append(row)
    wall = time.perf_counter() - start
    scored = [r for r in rows if r["status"] == "scored"]

    def mean(key: str) -> float:
        return round(sum(r[key] or 0.0 for r in scored) / max(1, len(scored)), 2)

    per_file = {k: mean(f"ms_{k}") for k in ("decode", "checks", "model", "total")}
    per_file["read_hash_row"] = round(per_file["total"] - per_file["decode"]
                                      - per_file["checks"] - per_file["model"], 2)
    slot_ms = wall * 1000.0 * info.get("workers", workers) / max(1, len(rows))
    return {
        "engine": engine, "workers": info.get("workers", workers), "files": len(rows),
        "scored": len(scored), "wall_s": round(wall, 2),
        "images_per_s": round(len(rows) / wall, 1),
        "start_s": round((first or start) - start, 2),
        "steady_images_per_s": round((len(rows) - 1) / (last - first), 1)
        if last and first and last > first else None,
        "ms_per_file": per_file,
        "engine_overhead_ms_per_file": round(slot_ms - per_file["total"], 2),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }, rows


def measure(images: Sequence[str], model_path: str | None = None,
            configs: Sequence[tuple[str, int]] = CONFIGS) -> dict:
    """Every configuration on the same images: {"runs": [...], "machine": ..., ...}."""
    from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL
    from pneumo.scale.manifest import stat_items

    model_path = str(model_path or DEFAULT_MODEL)
    items = stat_items(images)
    runs, reference, ray = [], None, None
    try:
        for engine, workers in configs:
            if engine == "ray" and ray is None:
                from pneumo.scale.ray_engine import connect

                t0 = time.perf_counter()
                ray = connect(None, num_cpus=max(w for e, w in configs if e == "ray"))
                ray_start = round(time.perf_counter() - t0, 2)
            log.info("scaling: %s engine, %d worker(s), %d images", engine, workers, len(items))
            figures, rows = _run(engine, workers, items, model_path)
            if engine == "ray":
                figures["ray_start_s"] = ray_start
            by_path = {r["path"]: r["probability"] for r in rows}
            reference = reference or by_path
            figures["max_probability_difference"] = max(
                (abs(by_path[p] - q) for p, q in reference.items()
                 if p in by_path and q is not None and by_path[p] is not None), default=0.0)
            runs.append(figures)
            log.info("scaling: %s", figures)
    finally:
        if ray is not None:
            ray.shutdown()
    return {"images": len(items), "distinct_images": len(set(images)), "model": model_path,
            "cpus": os.cpu_count(), "runs": runs,
            "note": "CPU shared with other work: see load_average (1-minute, before and after "
                    "each run)"}


def markdown(result: dict) -> str:
    """The measurement as a Markdown table with its time breakdown."""
    lines = [
        f"{result['images']} images ({result['distinct_images']} distinct), {result['cpus']} "
        "CPUs; per-file times are the mean over scored files, inside one worker; engine "
        "overhead = wall x workers / files - a file's own time (start-up, transport, idle).",
        "",
        "| engine | workers | images/s | steady images/s | start s | decode ms | checks ms | "
        "model ms | read+hash+row ms | engine overhead ms/file | load avg (before, after) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        ms = r["ms_per_file"]
        start = f"{r['start_s']}" + (f" (+{r['ray_start_s']} Ray)" if "ray_start_s" in r else "")
        lines.append(
            f"| {r['engine']} | {r['workers']} | {r['images_per_s']} | "
            f"{r['steady_images_per_s']} | {start} | {ms['decode']} | {ms['checks']} | "
            f"{ms['model']} | {ms['read_hash_row']} | {r['engine_overhead_ms_per_file']} | "
            f"{r['load_average'][0]}, {r['load_average'][1]} |")
    by = {(r["engine"], r["workers"]): r for r in result["runs"]}
    if ("ray", 2) in by and ("local", 2) in by:
        ratio = by[("ray", 2)]["images_per_s"] / by[("local", 2)]["images_per_s"]
        lines += ["", f"Ray on 2 actors: {ratio:.2f} x the local engine on 2 processes "
                      f"({'within' if ratio >= 0.75 else 'outside'} 25 %)."]
    return "\n".join(lines)


def missing_note(sources: Sequence[str] = DEFAULT_SOURCES) -> str | None:
    """Why the measurement cannot run here (None: it can)."""
    import importlib.util

    absent = [n for n in ("ray", "pyarrow") if importlib.util.find_spec(n) is None]
    if absent:
        return f"needs the [scale] extra ({', '.join(absent)} not installed)"
    if not any(Path(s).exists() for s in sources):
        return f"no images in {', '.join(sources)}"
    return None


def section(quick: bool = False, sources: Sequence[str] = DEFAULT_SOURCES) -> dict:
    """The `pneumo bench` section: 2,000 images (200 with --quick), every configuration."""
    result = measure(pick_images(sources, 200 if quick else 2000))
    return {"status": "ok", **result, "markdown": markdown(result)}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pneumo.bench.scaling --out DIR`: measure, write scaling.json/.md, print."""
    p = argparse.ArgumentParser(prog="python -m pneumo.bench.scaling", description=__doc__)
    p.add_argument("--out", required=True, help="folder for scaling.json and scaling.md")
    p.add_argument("--n", type=int, default=2000, help="images (default: %(default)s)")
    p.add_argument("--model", default=None, help="ONNX model (default: the bundled one)")
    p.add_argument("--source", action="append", default=None,
                   help=f"image folder (repeatable; default: {', '.join(DEFAULT_SOURCES)})")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    result = measure(pick_images(args.source or DEFAULT_SOURCES, args.n), args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "scaling.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
