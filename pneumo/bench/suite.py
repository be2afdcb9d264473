"""One benchmark run: every section in order, each failure contained, then the report."""

from __future__ import annotations

import json
import logging
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pneumo.bench import (
    dicom_decode,
    executable,
    http_load,
    model_latency,
    preprocessing,
    request_path,
    results_report,
    roofline,
    scaling,
)
from pneumo.bench.machine import load_average, machine_info, usable_cores
from pneumo.bench.models import ModelSet, default_arch, prepare_models, servable_model
from pneumo.bench.timing import Settings

log = logging.getLogger(__name__)

SECTIONS = ("model_latency", "roofline", "preprocessing", "dicom_decode", "http", "request_path",
            "scaling", "executable")


@dataclass
class Options:
    """What `pneumo bench` was asked to do."""

    out: Path = Path("bench-results")
    quick: bool = False
    export_dir: Path | None = None
    keras: Path | None = None
    exe: Path | None = None
    skip: list[str] = field(default_factory=list)
    compare: list[Path] = field(default_factory=list)
    """Further ONNX models whose request path is profiled beside the served one."""
    command: str = "pneumo bench"


@dataclass
class Plan:
    """Sizes of one run (full or --quick)."""

    batches: tuple[int, ...]
    threads: tuple[int, ...]
    model: Settings
    micro: Settings
    pre: Settings
    http_clients: tuple[int, ...]
    http_seconds: float
    http_max_requests: int
    exe_runs: int
    small_micro: bool
    path_requests: int


def plan(quick: bool) -> Plan:
    """The full plan, or the --quick smoke-test plan (well under a minute on 2 cores)."""
    cores = usable_cores()
    if quick:
        return Plan(batches=(1, 8), threads=(1,),
                    model=Settings(warmup=1, repeat=15, min_repeat=3, max_seconds=0.4),
                    micro=Settings(warmup=1, repeat=5, min_repeat=3, max_seconds=0.3),
                    pre=Settings(warmup=1, repeat=10, min_repeat=3, max_seconds=0.3),
                    http_clients=(1, 4, 8), http_seconds=2.0, http_max_requests=200,
                    exe_runs=1, small_micro=True, path_requests=10)
    return Plan(batches=(1, 8, 32), threads=tuple(sorted({1, cores})),
                model=Settings(warmup=5, repeat=200, min_repeat=10, max_seconds=8.0),
                micro=Settings(warmup=3, repeat=50, min_repeat=10, max_seconds=3.0),
                pre=Settings(warmup=3, repeat=100, min_repeat=10, max_seconds=3.0),
                http_clients=(1, 4, 8), http_seconds=10.0, http_max_requests=5000,
                exe_runs=5, small_micro=False, path_requests=100)


def _guard(name: str, fn: Callable[[], dict]) -> dict:
    """Run one section; an exception becomes {"status": "error"} instead of ending the run."""
    t0 = time.perf_counter()
    log.info(f"{name} ...")
    try:
        sec = fn()
    except Exception:
        sec = {"status": "error", "error": traceback.format_exc()}
        log.error("%s FAILED:\n%s", name, sec["error"])
    sec["elapsed_s"] = time.perf_counter() - t0
    if sec.get("status") == "skipped":
        log.info(f"{name} skipped: {sec.get('note')}")
    return sec


def _section(name: str, opts: Options, fn: Callable[[], dict], *, title: str | None = None,
             missing: str | None = None) -> dict:
    """One section: skipped when --skip names it or `missing` says why it cannot run."""
    if name in opts.skip:
        return {"status": "skipped", "note": f"--skip {name}"}
    if missing:
        log.info(f"{title or name} skipped: {missing}")
        return {"status": "skipped", "note": missing}
    return _guard(title or name, fn)


def _header(opts: Options, p: Plan) -> dict:
    """The start of results.json: when, what, where, with which plan."""
    return {"schema": 1, "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": opts.quick, "command": opts.command, "machine": machine_info(),
            "plan": {"batches": list(p.batches), "threads": list(p.threads),
                     "http_clients": list(p.http_clients), "http_seconds": p.http_seconds},
            "sections": {}, "notes": []}


def _prepare(opts: Options, tmp: Path, res: dict) -> ModelSet:
    """The models to time (none when every section that needs them is skipped)."""
    if not {"model_latency", "roofline", "http", "request_path"} - set(opts.skip):
        return ModelSet()
    t0 = time.perf_counter()
    models = ModelSet()
    try:
        models = prepare_models(tmp / "models", export_dir=opts.export_dir,
                                keras_path=opts.keras)
    except Exception:
        res["notes"].append("preparing models failed:\n" + traceback.format_exc())
        log.error("%s", res["notes"][-1])
    res["prepare_models_s"] = time.perf_counter() - t0
    return models


def _run_sections(opts: Options, p: Plan, models: ModelSet, tmp: Path) -> dict:
    """Every section in order, each contained (see _guard)."""
    secs: dict = {}
    image = preprocessing.inputs()["jpeg_8bit"]

    def _roofline() -> dict:
        threads = set(p.threads) | ({usable_cores()} if models.keras else set())
        return roofline.run(models, secs.get("model_latency") or {}, tuple(sorted(threads)),
                            p.micro, small=p.small_micro, all_cores=usable_cores())

    def _preprocessing() -> dict:
        entry = next(iter(models.onnx), None)
        size = entry.input_size if entry else default_arch()[1]
        return preprocessing.run(size, p.pre)

    def _http() -> dict:
        path, note = servable_model(models, tmp)
        return http_load.run(path, image, tmp, clients=p.http_clients,
                             duration_s=p.http_seconds, max_requests=p.http_max_requests,
                             model_note=note)

    def _request_path() -> dict:
        path, note = servable_model(models, tmp)
        if path is None:
            return {"status": "skipped", "note": "no ONNX model with pneumo metadata to serve"
                    + (f" ({note})" if note else "")}
        named = {"served": path, **{f"compare {i + 1}: {m.name}": m
                                    for i, m in enumerate(opts.compare)}}
        return request_path.run(named, image, tmp, requests=p.path_requests,
                                settings=p.model)

    cfg = model_latency.LatencyConfig(p.batches, p.threads, p.model)
    secs["model_latency"] = _section("model_latency", opts, title="model latency",
                                     fn=lambda: model_latency.run(models, cfg))
    secs["roofline"] = _section("roofline", opts, _roofline,
                                missing=roofline.missing_onnx_note()
                                or (None if models.onnx else "no ONNX model to count"))
    secs["preprocessing"] = _section("preprocessing", opts, _preprocessing)
    secs["dicom_decode"] = _section("dicom_decode", opts, lambda: dicom_decode.run(p.pre),
                                    title="DICOM decode per transfer syntax")
    secs["http"] = _section("http", opts, _http)
    secs["request_path"] = _section("request_path", opts, _request_path,
                                    title="request path of one upload")
    secs["scaling"] = _section("scaling", opts, lambda: scaling.section(quick=opts.quick),
                               missing=scaling.missing_note(),
                               title="archive scoring: local and Ray engines")
    secs["executable"] = _section("executable", opts, lambda: executable.run(
        opts.exe, image, runs=p.exe_runs))
    return secs


def _write(res: dict, out: Path) -> dict[str, Path]:
    """results.json, results.md and the plots; the numbers alone if the plots fail."""
    try:
        return results_report.write(res, out)
    except Exception:  # plots must never cost the numbers
        res["notes"].append("report/plots failed:\n" + traceback.format_exc())
        res["plots"] = []
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "results.json", "md": out / "results.md"}
        res["files"] = {k: str(v) for k, v in paths.items()}
        paths["json"].write_text(json.dumps(res, indent=1, default=str))
        paths["md"].write_text(results_report.markdown(res, []))
        return paths


def run(opts: Options) -> dict:
    """Run the suite and write results.json / results.md / plots into opts.out."""
    t_start = time.perf_counter()
    p = plan(opts.quick)
    res = _header(opts, p)
    with tempfile.TemporaryDirectory(prefix="pneumo-bench-") as tmp_s:
        tmp = Path(tmp_s)
        models = _prepare(opts, tmp, res)
        res["tensorflow"] = models.tensorflow
        res["sections"] = _run_sections(opts, p, models, tmp)
    res["load_average_end"] = load_average()
    res["elapsed_s"] = time.perf_counter() - t_start
    paths = _write(res, Path(opts.out))
    log.info(f"wrote {paths['json']} and {paths['md']} ({res['elapsed_s']:.1f} s)")
    return res


def exit_code(res: dict) -> int:
    """0 when no section failed (skipped sections are fine), else 1."""
    return 1 if any(s.get("status") == "error" for s in res["sections"].values()) else 0
