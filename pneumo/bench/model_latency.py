"""Model latency: Keras predict, Keras tf.function, ONNX fp32 and int8, per batch and threads.

ONNX Runtime sessions are timed at each intra-op thread setting (1 and all usable cores);
TensorFlow fixes its thread pools when it starts, so Keras runs with its default (all cores)
and is labelled ``threads="tf"``. Speed-ups are ratios of p50 latencies measured in this run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pneumo.bench.models import KerasEntry, ModelSet, OnnxEntry, fixture_images
from pneumo.bench.timing import Settings, Stats, measure, ratio

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

TF_THREADS = "tf"


@dataclass
class LatencyConfig:
    """Batches, ORT thread settings and timing settings of one run."""

    batches: tuple[int, ...] = (1, 8, 32)
    threads: tuple[int, ...] = (1,)
    settings: Settings | None = None


def row_id(model: str, runtime: str, batch: int, threads: int | str) -> str:
    """Stable id of one timed configuration."""
    return f"{model}|{runtime}|b{batch}|t{threads}"


def _row(entry: OnnxEntry | KerasEntry, runtime: str, precision: str, batch: int,
         threads: int | str, stats: Stats) -> dict:
    return {
        "id": row_id(entry.key, runtime, batch, threads),
        "model": entry.key,
        "label": entry.label,
        "arch": entry.arch,
        "input_size": entry.input_size,
        "runtime": runtime,
        "precision": precision,
        "batch": batch,
        "threads": threads,
        "source": entry.source,
        "stats": stats.to_dict(),
        "per_image_ms": stats.p50 / batch,
        "images_per_s": 1000.0 * batch / stats.p50 if stats.p50 > 0 else None,
    }


def ort_session(path: str | Path, threads: int) -> onnxruntime.InferenceSession:
    """A CPU ONNX Runtime session with `threads` intra-op threads and one inter-op thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_onnx(entry: OnnxEntry, cfg: LatencyConfig) -> list[dict]:
    """Time one ONNX file at every thread setting and batch size."""
    rows = []
    base = fixture_images(entry.input_size)
    for threads in cfg.threads:
        sess = ort_session(entry.path, threads)
        name = sess.get_inputs()[0].name
        for batch in cfg.batches:
            x = np.ascontiguousarray(np.resize(base, (batch, *base.shape[1:])), np.float32)
            stats = measure(lambda s=sess, n=name, x=x: s.run(None, {n: x}), cfg.settings)
            row = _row(entry, "onnxruntime", entry.precision, batch, threads, stats)
            log.info(f"  {describe_row(row):32s} b{batch:<3d}: p50 {stats.p50:8.2f} ms")
            rows.append(row)
    return rows


def time_keras(entry: KerasEntry, cfg: LatencyConfig) -> list[dict]:
    """Time `model.predict` and a compiled `tf.function` call at every batch size."""
    import tensorflow as tf

    model = entry.model
    size = entry.input_size
    spec = tf.TensorSpec([None, size, size, 1], tf.float32)
    compiled = tf.function(lambda t: model(t, training=False), input_signature=[spec],
                           jit_compile=False)
    base = fixture_images(size)
    rows = []
    for batch in cfg.batches:
        x = np.ascontiguousarray(np.resize(base, (batch, *base.shape[1:])), np.float32)
        runs = {
            "keras.predict": lambda x=x: model.predict(x, batch_size=len(x), verbose=0),
            "keras.tf_function": lambda x=x: np.asarray(compiled(x)),
        }
        for runtime, fn in runs.items():
            stats = measure(fn, cfg.settings)
            row = _row(entry, runtime, "fp32", batch, TF_THREADS, stats)
            log.info(f"  {describe_row(row):32s} b{batch:<3d}: p50 {stats.p50:8.2f} ms")
            rows.append(row)
    return rows


def describe_row(row: dict) -> str:
    """Short human name of a latency row: label plus runtime/threads."""
    if row["runtime"] == "onnxruntime":
        return f"{row['label']} t{row['threads']}"
    return f"{row['label']} {row['runtime'].split('.', 1)[1].replace('tf_function', 'tf.function')}"


def speedups(rows: list[dict], batches: tuple[int, ...], threads: tuple[int, ...]) -> list[dict]:
    """Ratios baseline p50 / candidate p50 between rows of this run (>1: candidate faster)."""
    by_id = {r["id"]: r for r in rows}
    out: list[dict] = []
    seen: set[tuple[str, str]] = set()

    def add(base: str, cand: str) -> None:
        b, c = by_id.get(base), by_id.get(cand)
        if b is None or c is None or (base, cand) in seen:
            return
        seen.add((base, cand))
        out.append({"name": f"{describe_row(c)} vs {describe_row(b)}, batch {b['batch']}",
                    "baseline": base, "candidate": cand,
                    "baseline_p50_ms": b["stats"]["p50"], "candidate_p50_ms": c["stats"]["p50"],
                    "speedup": ratio(b["stats"]["p50"], c["stats"]["p50"])})

    def ort(key: str, b: int, t: int) -> str:
        return row_id(key, "onnxruntime", b, t)

    def keras(key: str, runtime: str, b: int) -> str:
        return row_id(key, runtime, b, TF_THREADS)

    for t in threads:  # the headline: what the deployment path buys over Keras, batch 1
        for prefix in ("model", "seed"):
            for runtime in ("keras.predict", "keras.tf_function"):
                for prec in ("int8", "fp32"):
                    add(keras(f"{prefix}-keras", runtime, 1), ort(f"{prefix}-{prec}", 1, t))
                add(keras(f"{prefix}-keras", runtime, 1), ort("shipped-int8", 1, t))
    for t in threads:
        for b in batches:
            add(ort("model-fp32", b, t), ort("model-int8", b, t))
            add(ort("model-fp32", b, t), ort("shipped-int8", b, t))
            add(ort("model-int8", b, t), ort("shipped-int8", b, t))
        add(ort("model-int8", 1, t), ort("seed-fp32", 1, t))
    for prefix in ("model", "seed"):
        for b in batches:
            add(keras(f"{prefix}-keras", "keras.predict", b),
                keras(f"{prefix}-keras", "keras.tf_function", b))
    if len(threads) > 1:
        lo, hi = min(threads), max(threads)
        for key in ("model-int8", "model-fp32", "shipped-int8", "seed-fp32"):
            for b in batches:
                add(ort(key, b, lo), ort(key, b, hi))
    return out


def run(models: ModelSet, cfg: LatencyConfig) -> dict:
    """Time every model in the set; returns the section dict for results.json."""
    rows: list[dict] = []
    errors: list[str] = []
    for entry in models.onnx:
        try:
            rows += time_onnx(entry, cfg)
        except Exception as exc:  # one broken file must not sink the other figures
            errors.append(f"{entry.label}: {type(exc).__name__}: {exc}")
    for kentry in models.keras:
        try:
            rows += time_keras(kentry, cfg)
        except Exception as exc:
            errors.append(f"{kentry.label}: {type(exc).__name__}: {exc}")
    notes = list(models.notes)
    if models.keras:
        notes.append("Keras runs with TensorFlow's default thread pools (all cores), "
                     "labelled threads='tf'.")
    notes += [f"error: {e}" for e in errors]
    return {
        "status": "ok" if rows else "skipped",
        "note": "" if rows else ("; ".join(notes) or "no model to time"),
        "batches": list(cfg.batches),
        "threads": list(cfg.threads),
        "settings": vars(cfg.settings) if cfg.settings else vars(Settings()),
        "models": [{"key": e.key, "label": e.label, "path": str(e.path),
                    "precision": e.precision, "arch": e.arch, "input_size": e.input_size,
                    "source": e.source, "size_bytes": e.path.stat().st_size}
                   for e in models.onnx]
        + [{"key": k.key, "label": k.label, "precision": "fp32", "arch": k.arch,
            "input_size": k.input_size, "source": k.source} for k in models.keras],
        "rows": rows,
        "speedups": speedups(rows, cfg.batches, cfg.threads),
        "notes": notes,
        "errors": errors,
    }
