"""`pneumo bench`'s stdout summary, on the results of a small real run of every section kind."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import sys

import pytest
from test_bench_executable import FAKE_EXE

from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL
from pneumo.bench import models, request_path, results_report, suite
from pneumo.bench.model_latency import describe_row
from pneumo.bench.results_report import _ms, summary
from pneumo.bench.timing import Settings
from pneumo.cli import main

TINY = Settings(warmup=1, repeat=3, min_repeat=2, max_seconds=0.1)


def tiny_plan(quick: bool) -> suite.Plan:
    """A run a few seconds long: batch 1, one thread, two short HTTP levels, one launch."""
    return suite.Plan(batches=(1,), threads=(1,), model=TINY, micro=TINY, pre=TINY,
                      http_clients=(1, 2), http_seconds=0.5, http_max_requests=20, exe_runs=1,
                      small_micro=True, path_requests=3)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """(exit code, stdout, results, out) of a tiny-plan bench: shipped model, stand-in exe."""
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"{DEFAULT_MODEL} is missing")
    tmp = tmp_path_factory.mktemp("bench-summary")
    exe = tmp / "pneumo-edge"
    exe.write_text(FAKE_EXE.format(python=sys.executable))
    os.chmod(exe, 0o755)
    out = tmp / "bench"
    argv = ["bench", "--quick", "--out", str(out), "--exe", str(exe), "--skip", "roofline",
            "--skip", "dicom_decode", "--skip", "scaling", "--compare", str(DEFAULT_MODEL)]
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout):
        mp.setattr(suite, "plan", tiny_plan)
        mp.setattr(models, "tensorflow_available", lambda: False)
        mp.setenv("TF_CPP_MIN_LOG_LEVEL", "2")  # bench sets it; restored afterwards
        code = main(argv)
    return code, stdout.getvalue(), json.loads((out / "results.json").read_text()), out


def _line_with(text: str, *parts: str) -> str:
    """The one line of text that holds every part."""
    hits = [line for line in text.splitlines() if all(p in line for p in parts)]
    assert len(hits) == 1, (parts, text)
    return hits[0]


def test_bench_prints_the_summary_and_only_it_on_stdout(small_run):
    code, stdout, res, out = small_run
    assert code == 0
    assert stdout == summary(res)  # nothing else (progress, TensorFlow) on stdout
    secs = res["sections"]
    assert [secs[k]["status"] for k in suite.SECTIONS] == [
        "ok", "skipped", "ok", "skipped", "ok", "ok", "skipped", "ok"]

    assert f"report: {out / 'results.md'}" in stdout and (out / "results.md").is_file()
    assert f"data:   {out / 'results.json'}" in stdout
    rows = [r for r in secs["model_latency"]["rows"] if r["batch"] == 1 and r["threads"] == 1]
    assert rows
    for r in rows:
        _line_with(stdout, describe_row(r), _ms(r["stats"]["p50"]), _ms(r["stats"]["p95"]))
    draft = next(r for r in secs["preprocessing"]["rows"]
                 if (r["input"], r["variant"]) == ("jpeg_8bit", "draft"))
    _line_with(stdout, "JPEG", f"{_ms(draft['total']['p50'])} ms as shipped")
    assert len(secs["http"]["levels"]) == 2
    for lv in secs["http"]["levels"]:
        _line_with(stdout, f"  {lv['clients']} ", _ms(lv["latency"]["p50"]),
                   _ms(lv["latency"]["p95"]), f"{lv['throughput_rps']:.1f}")
    path = secs["request_path"]["models"]
    assert list(path) == ["served", f"compare 1: {DEFAULT_MODEL.name}"]
    for name, row in path.items():
        laps = row["laps_p50_ms"]
        assert list(laps) == [*(s for s in request_path.STEPS if s != "preview"), "total"]
        assert row["requests"] == 3 and row["bare_session_p50_ms"] > 0
        assert row["wall_p50_ms"] > 0 and laps["save"] > 0 and laps["inference"] > 0
        _line_with(stdout, f"Request path ({name})", f"client p50 {_ms(row['wall_p50_ms'])} ms")
    assert "| inference |" in (out / "results.md").read_text()
    _line_with(stdout, "cold start", f"{secs['executable']['cold_start_median_s']:.2f} s")
    _line_with(stdout, "Skipped: roofline: --skip roofline")
    _line_with(stdout, "Skipped: DICOM decode: --skip dicom_decode")


def test_summary_names_failed_sections_and_notes(small_run):
    res = small_run[2]
    broken = copy.deepcopy(res)
    broken["sections"]["http"] = {"status": "error", "elapsed_s": 0.1,
                                  "error": "Traceback (most recent call last):\n  ...\n"
                                           "RuntimeError: server did not start"}
    broken["notes"].append("preparing models failed:\nTraceback ...")
    text = summary(broken)
    _line_with(text, "FAILED: HTTP end to end: RuntimeError: server did not start")
    _line_with(text, "Note: preparing models failed: (details in results.md)")
    assert "req/s" not in text  # no figures from a failed section
    assert "Traceback" not in text
    assert results_report.summary(res) != text
