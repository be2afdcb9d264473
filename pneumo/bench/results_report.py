"""results.json -> results.md (one Markdown table per section), PNG plots, and the short
summary `pneumo bench` prints on stdout."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

from pneumo.bench import request_path
from pneumo.bench.machine import describe
from pneumo.bench.model_latency import describe_row
from pneumo.extras import INSTALL_HINT

log = logging.getLogger(__name__)

SECTION_TITLES = {"model_latency": "model latency", "roofline": "roofline",
                  "preprocessing": "preprocessing", "dicom_decode": "DICOM decode",
                  "http": "HTTP end to end", "request_path": "request path",
                  "scaling": "archive scoring", "executable": "executable"}
"""results.json section keys, in run order, and their names in the stdout summary."""

LOAD_WARNING = 0.5
"""Load average (per usable core) above which the report warns that timings are noisy."""


def _f(v: object, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _mb(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:.1f}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in r) + " |"
            for r in rows]
    return out + [""]


def _stats_cells(s: dict) -> list:
    return [f"{s['n']} ({s['warmup']})", s["p50"], s["p95"], s["p99"], s["min"], s["max"]]


def _section_header(lines: list[str], title: str, sec: dict | None) -> bool:
    """Write the section title; False (after a note) when the section has no data."""
    lines.append(f"## {title}\n")
    if not sec:
        lines.append("_Not run._\n")
        return False
    if sec.get("status") == "skipped":
        lines.append(f"_Skipped: {sec.get('note', '')}_\n")
        return False
    if sec.get("status") == "error":
        lines.append(f"_Error:_\n\n```\n{sec.get('error', '')}\n```\n")
        return False
    return True


def _load_warning(res: dict) -> str | None:
    m = res.get("machine", {})
    cores = max(int(m.get("usable_cores") or 1), 1)
    loads = [x for x in (m.get("load_average"), res.get("load_average_end")) if x]
    worst = max((la[0] for la in loads), default=0.0)
    if worst / cores > LOAD_WARNING:
        return (f"**Warning:** the 1-minute load average reached {worst:.2f} on {cores} core(s) "
                "during this run: other processes competed for the CPU, so timings are noisy.")
    return None


def markdown(res: dict, plots: list[str]) -> str:
    """The whole Markdown report."""
    m = res.get("machine", {})
    lines = ["# Latency benchmark results\n",
             f"- Date: {res.get('date')} ({'--quick' if res.get('quick') else 'full run'}, "
             f"{_f(res.get('elapsed_s'), 1)} s)",
             f"- Machine: {describe(m)}",
             f"- Load average (1/5/15 min) at start: {m.get('load_average')}, at end: "
             f"{res.get('load_average_end')}",
             "- Versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()
                                        if v),
             f"- Command: `{res.get('command')}`", ""]
    warn = _load_warning(res)
    if warn:
        lines += [warn, ""]
    lines += ["All latencies are milliseconds. `n (w)` = timed repetitions (discarded warm-up "
              "runs). Speed-ups are ratios of p50 latencies measured in this same run.", ""]
    secs = res.get("sections", {})

    sec = secs.get("model_latency")
    if _section_header(lines, "Model latency", sec):
        lines += [f"- {n}" for n in sec.get("notes", [])] + [""]
        lines += _table(["Model", "Runtime", "Batch", "Threads", "n (w)", "p50", "p95", "p99",
                         "min", "max", "ms/image", "images/s"],
                        [[r["label"], r["runtime"], r["batch"], str(r["threads"]),
                          *_stats_cells(r["stats"]), r["per_image_ms"], r["images_per_s"]]
                         for r in sec["rows"]])
        if sec.get("speedups"):
            lines.append("### Speed-ups\n")
            lines += _table(["Comparison", "baseline p50", "candidate p50", "speed-up"],
                            [[s["name"], s["baseline_p50_ms"], s["candidate_p50_ms"],
                              f"{s['speedup']:.2f}x"] for s in sec["speedups"]])

    sec = secs.get("roofline")
    if _section_header(lines, "Roofline", sec):
        lines += [f"- {n}" for n in sec.get("notes", [])]
        lines += [f"- Memory copy bandwidth (1 thread): {sec['memory_bandwidth_gbs']:.1f} GB/s",
                  ""]
        lines += _table(["Model", "GMAC / image", "traffic MB / image", "uncounted nodes"],
                        [[v["label"], v["macs_per_image"] / 1e9,
                          v["traffic_bytes_per_image"] / 1e6, str(len(v["uncounted"]))]
                         for v in sec["models"].values()])
        lines += _table(["Microbenchmark", "Precision", "Threads", "GMAC", "p50 ms", "GMAC/s"],
                        [[u["kind"], u["precision"], u["threads"], u["macs"] / 1e9, u["p50_ms"],
                          u["gmacs"]] for u in sec["attainable"]["micro"]])
        lines += _table(["Model", "Runtime", "Batch", "Threads", "achieved GMAC/s",
                         "attainable GMAC/s", "efficiency", "bound (rough)"],
                        [[r["label"], r["runtime"], r["batch"], str(r["threads"]),
                          r["achieved_gmacs"], r["attainable_gmacs"],
                          f"{100 * r['efficiency']:.1f}%", r["bound"]] for r in sec["rows"]])

    sec = secs.get("preprocessing")
    if _section_header(lines, "Preprocessing (decode + resize)", sec):
        lines += [f"- {n}" for n in sec.get("notes", [])]
        if sec.get("jpeg_draft_speedup"):
            lines.append(f"- JPEG reduced-scale (draft) decoding speed-up, whole preprocessing: "
                         f"{sec['jpeg_draft_speedup']:.2f}x")
        lines.append("")
        lines += _table(["Input", "KB", "Variant", "decoded at", "decode p50", "resize p50",
                         "total n (w)", "total p50", "p95", "p99", "min", "max"],
                        [[r["input"], r["bytes"] / 1024, r["variant"],
                          "x".join(map(str, r["decoded_size"])), r["decode"]["p50"],
                          r["resize"]["p50"], *_stats_cells(r["total"])] for r in sec["rows"]])

    sec = secs.get("dicom_decode")
    if _section_header(lines, "DICOM decode per transfer syntax", sec):
        lines += [f"- {n}" for n in sec.get("notes", [])] + [""]
        lines += _table(["Transfer syntax", "UID", "KB", "n (w)", "p50 ms", "p95", "p99",
                         "min", "max"],
                        [[r["syntax"], r["uid"], r["bytes"] / 1024, *_stats_cells(r["decode"])]
                         for r in sec["rows"]])

    sec = secs.get("http")
    if _section_header(lines, "HTTP end to end", sec):
        srv = sec["server"]
        lines += [f"- Server: `{srv['command']}` on port {srv['port']}, up in "
                  f"{srv['startup_s']:.2f} s; model: {srv['model_note'] or srv['model']}",
                  f"- Upload: {sec['upload_bytes'] / 1024:.0f} KB 2-megapixel JPEG; each level "
                  f"{sec['duration_s']} s or {sec['max_requests']} requests at most",
                  f"- Server RSS: after start {_mb(sec['rss_bytes'].get('after_start'))} MB, "
                  f"after warm-up {_mb(sec['rss_bytes'].get('after_warmup'))} MB, after load "
                  f"{_mb(sec['rss_bytes'].get('after_load'))} MB"]
        if sec.get("server_timings_ms_last_warmup"):
            lines.append("- Server-side stage timings of the last warm-up request (ms): "
                         + ", ".join(f"{k} {v:.1f}" for k, v in
                                     sec["server_timings_ms_last_warmup"].items()))
        lines += [f"- {n}" for n in sec.get("notes", [])] + [""]
        rows = []
        for lv in sec["levels"]:
            lat = lv["latency"] or {}
            rows.append([lv["clients"], lv["requests"], lv["ok"], lv["errors"],
                         lv["throughput_rps"], lat.get("p50"), lat.get("p95"), lat.get("p99"),
                         lat.get("min"), lat.get("max"),
                         f"{_mb(lv['rss_before'])} -> {_mb(lv['rss_after'])}"])
        lines += _table(["Clients", "requests", "ok", "errors", "req/s", "p50", "p95", "p99",
                         "min", "max", "RSS MB"], rows)

    sec = secs.get("request_path")
    if _section_header(lines, "Request path of one upload", sec):
        lines += [f"- {n}" for n in sec.get("notes", [])]
        lines += [f"- {name}: `{row['model']}`" for name, row in sec["models"].items()] + [""]
        lines.append(request_path.markdown(sec))

    sec = secs.get("scaling")
    if _section_header(lines, "Archive scoring: local and Ray engines", sec):
        lines += [sec["markdown"], ""]

    sec = secs.get("executable")
    if _section_header(lines, "Executable", sec):
        lines += [f"- {sec['path']}: {_mb(sec['exe_bytes'])} MB executable, "
                  f"{_mb(sec['bundle_bytes'])} MB bundle",
                  f"- Cold start to first answered prediction: median "
                  f"{sec['cold_start_median_s']:.2f} s over {sec['runs']} launches "
                  f"(/healthz median {sec['healthz_median_s']:.2f} s)", ""]
        lines += _table(["Launch", "/healthz s", "first prediction s"],
                        [[i + 1, r["healthz_s"], r["first_prediction_s"]]
                         for i, r in enumerate(sec["launches"])])

    if res.get("notes"):
        lines += ["## Notes\n"] + [f"- {n}" for n in res["notes"]] + [""]
    if plots:
        lines += ["## Plots\n"] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ plots


def plot_all(res: dict, out: Path) -> list[str]:
    """Write every plot the data allows; returns the file names."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made: list[str] = []
    secs = res.get("sections", {})
    lat = secs.get("model_latency") or {}
    for batch in sorted({r["batch"] for r in lat.get("rows", [])}):
        rows = [r for r in lat["rows"] if r["batch"] == batch]
        fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
        labels = [describe_row(r) for r in rows]
        ax.boxplot([r["stats"]["samples_ms"] for r in rows], vert=False, whis=(1, 99),
                   showfliers=True, flierprops={"markersize": 2})
        ax.set_yticks(range(1, len(rows) + 1), labels, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("latency per call (ms, log scale)")
        ax.set_title(f"Model latency distribution, batch {batch} (whiskers p1-p99)")
        fig.tight_layout()
        name = f"latency_b{batch}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made.append(name)
    if lat.get("speedups"):
        sp = lat["speedups"]
        fig, ax = plt.subplots(figsize=(10, 0.35 * len(sp) + 1.5))
        ax.barh(range(len(sp)), [s["speedup"] for s in sp], color="tab:blue")
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_yticks(range(len(sp)), [s["name"] for s in sp], fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("speed-up (baseline p50 / candidate p50, log scale)")
        ax.set_title("Speed-ups measured in this run")
        fig.tight_layout()
        fig.savefig(out / "speedups.png", dpi=110)
        plt.close(fig)
        made.append("speedups.png")
    roof = secs.get("roofline") or {}
    if roof.get("status") == "ok" and roof.get("rows"):
        made.append(_plot_roofline(plt, roof, out))
    pre = secs.get("preprocessing") or {}
    if pre.get("status") == "ok":
        rows = pre["rows"]
        fig, ax = plt.subplots(figsize=(8, 3.5))
        names = [f"{r['input']} {r['variant']}" for r in rows]
        dec = [r["decode"]["p50"] for r in rows]
        rsz = [r["resize"]["p50"] for r in rows]
        ax.barh(names, dec, label="decode p50")
        ax.barh(names, rsz, left=dec, label="resize p50")
        ax.set_xlabel("ms")
        ax.set_title("Preprocessing a 2-megapixel upload")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "preprocessing.png", dpi=110)
        plt.close(fig)
        made.append("preprocessing.png")
    web = secs.get("http") or {}
    if web.get("status") == "ok" and web.get("levels"):
        lv = web["levels"]
        c = [x["clients"] for x in lv]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(c, [x["throughput_rps"] for x in lv], "o-", color="tab:blue")
        ax.set_xlabel("concurrent clients (closed loop)")
        ax.set_ylabel("throughput (req/s)", color="tab:blue")
        ax.set_ylim(bottom=0)
        ax2 = ax.twinx()
        for q, style in (("p50", "s--"), ("p95", "^:")):
            ax2.plot(c, [(x["latency"] or {}).get(q) for x in lv], style, color="tab:red",
                     label=q)
        ax2.set_ylabel("latency (ms)", color="tab:red")
        ax2.legend(loc="upper left")
        ax.set_title("HTTP POST /api/v1/predict, 2-megapixel JPEG")
        fig.tight_layout()
        fig.savefig(out / "http_throughput.png", dpi=110)
        plt.close(fig)
        made.append("http_throughput.png")
    return made


def _plot_roofline(plt: object, roof: dict, out: Path) -> str:
    import numpy as np

    bw = roof["memory_bandwidth_gbs"]
    fig, ax = plt.subplots(figsize=(8, 5))
    ai = np.logspace(-1, 3, 200)
    for key, peak in sorted(roof["attainable"]["peak"].items()):
        ax.plot(ai, np.minimum(peak / 1e9, ai * bw), lw=1, label=f"ceiling {key}")
    best: dict[str, dict] = {}
    for r in roof["rows"]:
        k = f"{r['label']} {r['runtime']}"
        if k not in best or r["achieved_gmacs"] > best[k]["achieved_gmacs"]:
            best[k] = r
    for r in best.values():
        ax.scatter(r["arithmetic_intensity_mac_per_byte"], r["achieved_gmacs"], s=25)
        ax.annotate(f"{describe_row(r)} b{r['batch']}",
                    (r["arithmetic_intensity_mac_per_byte"], r["achieved_gmacs"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (MAC / byte, rough)")
    ax.set_ylabel("GMAC/s")
    ax.set_title("Roofline (best configuration per model/runtime)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "roofline.png", dpi=110)
    plt.close(fig)
    return "roofline.png"


def plots_missing_note() -> str | None:
    """Why no plots can be drawn here (matplotlib is a training package), or None."""
    if importlib.util.find_spec("matplotlib") is None:
        return f"Plots skipped: they need matplotlib, one of the training packages: {INSTALL_HINT}"
    return None


def write(res: dict, out: Path) -> dict[str, Path]:
    """Write results.json, the plots and results.md into `out` (their paths into res["files"])."""
    out.mkdir(parents=True, exist_ok=True)
    note = plots_missing_note()
    if note:
        log.info(note)
        res.setdefault("notes", []).append(note)
        plots = []
    else:
        plots = plot_all(res, out)
    res["plots"] = plots
    paths = {"json": out / "results.json", "md": out / "results.md"}
    res["files"] = {k: str(v) for k, v in paths.items()}
    paths["json"].write_text(json.dumps(res, indent=1, default=str))
    paths["md"].write_text(markdown(res, plots))
    return paths


# ------------------------------------------------------------------------------ summary


def _aligned(rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Rows of cells as text columns: the first one left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [(indent + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                for i, (c, w) in enumerate(zip(r, widths, strict=True)))).rstrip()
            for r in rows]


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _size(pixels: list | tuple | None) -> str:
    return "x".join(map(str, pixels)) if pixels else "2-MP"


def _summary_latency(sec: dict) -> list[str]:
    rows = [r for r in sec.get("rows", []) if r["batch"] == 1 and r["threads"] in (1, "tf")]
    if not rows:
        return []
    table = [["model", "p50 ms", "p95 ms"]]
    table += [[describe_row(r), _ms(r["stats"]["p50"]), _ms(r["stats"]["p95"])] for r in rows]
    keras = "; Keras on TensorFlow's threads" if any(r["threads"] == "tf" for r in rows) else ""
    return [f"Model latency, batch 1 (ONNX Runtime on 1 thread{keras}):", *_aligned(table)]


def _summary_preprocessing(sec: dict) -> list[str]:
    rows = {r["variant"]: r for r in sec.get("rows", []) if r["input"] == "jpeg_8bit"}
    if not rows:
        return []
    parts = []
    if "draft" in rows:
        parts.append(f"{_ms(rows['draft']['total']['p50'])} ms as shipped (reduced-scale decode)")
    if "no_draft" in rows:
        parts.append(f"{_ms(rows['no_draft']['total']['p50'])} ms full-size decode")
    size = _size(next(iter(rows.values())).get("pixels"))
    return [f"Preprocessing, {size} JPEG, decode + resize p50: " + ", ".join(parts)]


def _summary_dicom(sec: dict) -> list[str]:
    rows = sec.get("rows") or []
    if not rows:
        return []
    lo = min(rows, key=lambda r: r["decode"]["p50"])
    hi = max(rows, key=lambda r: r["decode"]["p50"])
    return [f"DICOM decode p50 over {len(rows)} transfer syntaxes: {_ms(lo['decode']['p50'])} ms "
            f"({lo['syntax']}) to {_ms(hi['decode']['p50'])} ms ({hi['syntax']})"]


def _summary_http(sec: dict) -> list[str]:
    levels = sec.get("levels") or []
    if not levels:
        return []
    table = [["clients", "p50 ms", "p95 ms", "req/s", "requests", "errors"]]
    for lv in levels:
        lat = lv.get("latency") or {}
        table.append([str(lv["clients"]), _ms(lat.get("p50")), _ms(lat.get("p95")),
                      _f(lv.get("throughput_rps"), 1), str(lv["requests"]), str(lv["errors"])])
    kb = sec.get("upload_bytes")
    upload = f", {kb / 1024:.0f} KB JPEG upload" if kb else ""
    return [f"HTTP POST /api/v1/predict end to end{upload}, closed loop:", *_aligned(table)]


def _summary_request_path(sec: dict) -> list[str]:
    rows = sec.get("models") or {}
    return [f"Request path ({name}): client p50 {_ms(r['wall_p50_ms'])} ms = server "
            f"{_ms(r['laps_p50_ms'].get('total'))} ms (inference lap "
            f"{_ms(r['laps_p50_ms'].get('inference'))}, bare session "
            f"{_ms(r['bare_session_p50_ms'])}) + HTTP and framework "
            f"{_ms(r['http_and_framework_p50_ms'])} ms" for name, r in rows.items()]


def _summary_executable(sec: dict) -> list[str]:
    if sec.get("cold_start_median_s") is None:
        return []
    return [f"Executable cold start to the first prediction: median "
            f"{sec['cold_start_median_s']:.2f} s over {sec['runs']} launch(es) "
            f"({_mb(sec.get('exe_bytes'))} MB executable)"]


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[0] + (" (details in results.md)" if len(lines) > 1 else "")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def summary(res: dict) -> str:
    """The plain-text summary `pneumo bench` prints: report paths, headline figures, skips."""
    kind = "--quick" if res.get("quick") else "full run"
    lines = [f"pneumo bench ({kind}, {_f(res.get('elapsed_s'), 1)} s)"]
    files = res.get("files") or {}
    if files:
        lines += [f"  report: {files.get('md')}", f"  data:   {files.get('json')}"]
    warn = _load_warning(res)
    if warn:
        lines.append(warn.replace("**", ""))
    secs = res.get("sections", {})
    blocks = {"model_latency": _summary_latency, "preprocessing": _summary_preprocessing,
              "dicom_decode": _summary_dicom, "http": _summary_http,
              "request_path": _summary_request_path, "executable": _summary_executable}
    for key, block in blocks.items():
        sec = secs.get(key) or {}
        text = block(sec) if sec.get("status") == "ok" else []
        if text:
            lines += ["", *text]
    status = []
    for key in [*SECTION_TITLES, *(k for k in secs if k not in SECTION_TITLES)]:
        sec = secs.get(key)
        title = SECTION_TITLES.get(key, key)
        if sec is None:
            status.append(f"Not run: {title}")
        elif sec.get("status") == "skipped":
            status.append(f"Skipped: {title}: {sec.get('note') or 'no reason given'}")
        elif sec.get("status") == "error":
            status.append(f"FAILED: {title}: {_last_line(sec.get('error', ''))} "
                          "(traceback in results.md)")
    notes = [f"Note: {_first_line(n)}" for n in res.get("notes", []) if _first_line(n)]
    if status or notes:
        lines += [""] + status + notes
    return "\n".join(lines) + "\n"
