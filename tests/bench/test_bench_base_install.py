"""`pneumo bench` on the base install: the ONNX Runtime sections run, the rest say why not.

Each run is a subprocess whose import system refuses every package of the `[train]` extra
(tests/runtime_guard.py: tensorflow, keras, jax, scipy, sklearn, matplotlib, tf2onnx, onnx...),
as on a machine where pip never installed them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pneumo import extras
from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL
from pneumo.bench.results_report import summary

GUARD = Path(__file__).resolve().parents[1] / "runtime_guard.py"
ASKED_ONLY = {"tensorflow", "keras", "tf2onnx", "onnx", "matplotlib", "ray", "pyarrow"}
"""The training packages (and the [scale] extra's) bench may look for (find_spec) before doing
without them."""


def guarded_pneumo(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """`pneumo ARGV` without the training packages."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, str(GUARD), *argv], capture_output=True, text=True,
                          timeout=180, cwd=cwd, env=env)


def refused(stderr: str) -> set[str]:
    """Top-level names of the blocked packages the run asked for."""
    return {line.split()[1].split(".")[0] for line in stderr.splitlines()
            if line.startswith("REFUSED ")}


def test_bench_runs_its_onnx_runtime_sections_without_the_training_packages(tmp_path):
    out = tmp_path / "bench"
    res = guarded_pneumo("bench", "--quick", "--skip", "executable", "--skip", "dicom_decode",
                         "--skip", "http", "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    secs = results["sections"]
    roof = secs["roofline"]
    assert roof["status"] == "skipped"
    assert roof["note"] == f"needs the training packages (onnx): {extras.INSTALL_HINT}"
    assert secs["preprocessing"]["status"] == "ok"
    assert secs["scaling"] == {**secs["scaling"], "status": "skipped",
                               "note": "needs the [scale] extra (ray, pyarrow not installed)"}
    if DEFAULT_MODEL.is_file():  # the shipped model is timed through ONNX Runtime alone
        lat = secs["model_latency"]
        assert lat["status"] == "ok" and {r["model"] for r in lat["rows"]} == {"shipped-int8"}
        assert {r["runtime"] for r in lat["rows"]} == {"onnxruntime"}
    assert results["plots"] == [] and not list(out.glob("*.png"))
    assert any("matplotlib" in n and extras.INSTALL_HINT in n for n in results["notes"])
    assert "Roofline" in (out / "results.md").read_text()
    # stdout is the summary alone; it names the skipped roofline and its reason
    assert res.stdout == summary(results)
    assert f"Skipped: roofline: {roof['note']}" in res.stdout
    assert refused(res.stderr) <= ASKED_ONLY, refused(res.stderr)


def test_bench_keras_without_tensorflow_says_what_to_install(tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes(b"not opened")
    res = guarded_pneumo("bench", "--keras", str(model), "--out", str(tmp_path / "b"),
                         cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    line = extras.hint("bench", ["tensorflow", "keras", "tf2onnx", "onnx"])
    assert line in res.stderr.splitlines(), res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert not (tmp_path / "b").exists()
