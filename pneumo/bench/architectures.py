"""What each CAM-ready architecture costs on this machine, next to the shipped pair (issue 27).

For every candidate (architecture x input side) a fresh network is built, exported the way
`pneumo export` does it (tf2onnx with the CAM and embedding outputs; int8 QDQ calibrated on
the fixture X-rays), and measured in one run with the shipped model: MACs counted from the
ONNX graph, parameters, int8 file size, and ONNX Runtime latency on one thread and on two,
batch 1 (the weights do not change the cost, so untrained ones are measured). Students are
chosen by the measured one-thread latency, not by their MACs: int8 depthwise convolutions
need not follow their MACs on AVX2 without VNNI.

`pneumo bench --architectures` writes architectures.json, architectures.md and
architectures.png (ms against MACs) into --out.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from pneumo.bench.machine import describe, machine_info
from pneumo.bench.model_latency import ort_session
from pneumo.bench.models import fixture_images
from pneumo.bench.timing import Settings, measure, ratio

log = logging.getLogger(__name__)

CANDIDATES: tuple[tuple[str, int], ...] = (
    ("cnn", 224), ("stem4", 224), ("mobile", 224), ("resnet", 224),
    ("stem4", 192), ("mobile", 192), ("resnet", 192), ("stem4", 160), ("resnet", 160),
)
"""(architecture, input side) measured by default; ``cnn`` 224 is one member of the pair."""
THREADS = (1, 2)


def _latency(path: Path, size: int, threads: int, settings: Settings) -> float:
    """p50 ms of one image through an ONNX file (batch 1)."""
    sess = ort_session(path, threads)
    x = fixture_images(size, 1)
    feed = {sess.get_inputs()[0].name: x}
    return measure(lambda: sess.run(None, feed), settings).p50


def measure_file(name: str, path: Path, size: int, settings: Settings, *,
                 precision: str, params: int | None = None) -> dict:
    """One row: MACs, size and latency of an ONNX file."""
    from pneumo.bench.roofline import count_macs

    row = {"model": name, "precision": precision, "input_size": size,
           "macs": count_macs(path)["macs_per_image"], "params": params,
           "file_bytes": path.stat().st_size}
    for t in THREADS:
        row[f"ms_{t}t"] = _latency(path, size, t, settings)
    log.info("  %-14s %-4s %4d px  %7.1f MMAC  %6.2f MB  %6.2f ms (1 thread)", name, precision,
             size, row["macs"] / 1e6, row["file_bytes"] / 1e6, row["ms_1t"])
    return row


def measure_architecture(arch: str, size: int, tmp: Path, settings: Settings) -> list[dict]:
    """fp32 and int8 rows of a fresh network of this architecture and input side."""
    from pneumo.export.onnx_export import convert
    from pneumo.export.quantize import quantize_int8
    from pneumo.train.model import build_model

    model = build_model(arch, size)
    fp32 = convert(model, tmp / f"{arch}-{size}.fp32.onnx")
    int8 = quantize_int8(fp32, tmp / f"{arch}-{size}.int8.onnx", fixture_images(size, 32))
    name = f"{arch}-{size}"
    params = int(model.count_params())
    return [measure_file(name, fp32, size, settings, precision="fp32", params=params),
            measure_file(name, int8, size, settings, precision="int8", params=params)]


def run(out: Path, *, candidates: tuple[tuple[str, int], ...] = CANDIDATES,
        shipped: Path | None = None, settings: Settings | None = None) -> dict:
    """Measure the shipped model and every candidate in one run; write the report files."""
    from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL, read_metadata

    settings = settings or Settings(warmup=5, repeat=100, min_repeat=20, max_seconds=8.0)
    shipped = Path(shipped or DEFAULT_MODEL)
    meta, _ = read_metadata(shipped)
    rows = [measure_file("shipped pair", shipped, int(meta["input_size"]), settings,
                         precision="int8")]
    with tempfile.TemporaryDirectory() as tmp:
        for arch, size in candidates:
            rows += measure_architecture(arch, size, Path(tmp), settings)
    pair_ms = rows[0]["ms_1t"]
    for r in rows:
        r["speedup_vs_pair_1t"] = ratio(pair_ms, r["ms_1t"])
        r["mac_ratio_vs_pair"] = ratio(rows[0]["macs"], r["macs"])
    result = {"machine": machine_info(), "shipped": str(shipped), "rows": rows,
              "settings": {"warmup": settings.warmup, "repeat": settings.repeat,
                           "max_seconds": settings.max_seconds},
              "notes": ["Untrained weights: the cost of a network does not depend on them.",
                        "Latency: ONNX Runtime CPU, batch 1, p50 over the timed runs; the "
                        "shipped pair measured in the same run.",
                        "MACs: Conv/MatMul/Gemm nodes after ONNX shape inference."]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "architectures.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "architectures.md").write_text(markdown(result))
    plot(result, out / "architectures.png")
    return result


def markdown(result: dict) -> str:
    """The cost table as Markdown."""
    lines = ["# What each architecture costs (one run, this machine)", "",
             f"Machine: {describe(result['machine'])}. Command: `pneumo bench "
             "--architectures`. Shipped model: `" + Path(result["shipped"]).name + "`.", "",
             "| model | precision | px | MMAC | params | file MB | ms, 1 thread | ms, 2 threads "
             "| x faster than the pair (1 thread) | x fewer MACs |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        params = f"{r['params'] / 1e6:.2f} M" if r["params"] else "-"
        lines.append(f"| {r['model']} | {r['precision']} | {r['input_size']} | "
                     f"{r['macs'] / 1e6:.0f} | {params} | {r['file_bytes'] / 1e6:.2f} | "
                     f"{r['ms_1t']:.2f} | {r['ms_2t']:.2f} | "
                     f"{_x(r['speedup_vs_pair_1t'])} | {_x(r['mac_ratio_vs_pair'])} |")
    lines += ["", *[f"- {n}" for n in result["notes"]], ""]
    return "\n".join(lines)


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def plot(result: dict, path: Path) -> None:
    """One-thread ms against MACs, one point per model and precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for prec, marker in (("fp32", "o"), ("int8", "s")):
        rows = [r for r in result["rows"] if r["precision"] == prec]
        xs = np.array([r["macs"] / 1e6 for r in rows])
        ys = np.array([r["ms_1t"] for r in rows])
        ax.scatter(xs, ys, marker=marker, label=prec)
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(r["model"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("MMAC per image (ONNX graph)")
    ax.set_ylabel("ms per image, 1 thread, batch 1")
    ax.set_title("Cost of the CAM-ready architectures (untrained weights)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
