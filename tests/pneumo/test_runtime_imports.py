"""The base install runs every runtime command: proved with the training packages made absent.

Each command really runs (a server answering a real X-ray, batch prediction, a site
proposal, keys, a signed model install and rollback, history check and backup) in a
subprocess whose import system refuses every package of the `[train]` extra
(tests/runtime_guard.py), so an import hidden inside a function is caught too.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from apptools import XRAY_NORMAL, XRAY_PNEUMONIA, http, post_image, start_server

from pneumo import extras
from pneumo.app.pipeline.onnx_model import DEFAULT_MODEL
from pneumo.app.updates.model_store import REFERENCE_DIR
from pneumo.app.updates.signing import PRIVATE_NAME, PUBLIC_NAME
from pneumo.cli import build_parser

GUARD = Path(__file__).resolve().parents[1] / "runtime_guard.py"
ISSUE_LIST = {"tensorflow", "keras", "jax", "scipy", "sklearn", "matplotlib", "tf2onnx", "onnx",
              "ray", "pyarrow"}
"""The packages the runtime must never import (the front-door issue's list)."""
TRAINING_COMMANDS = {"train", "evaluate", "recipes", "gan", "ablation", "export",
                     "drift-reference"}


def guard_env() -> dict:
    """The environment of a guarded run: no display, a browser command that cannot open."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return dict(env, BROWSER="false", PYTHONUNBUFFERED="1")


def guarded(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """tests/runtime_guard.py ARGS in a subprocess."""
    return subprocess.run([sys.executable, str(GUARD), *args], capture_output=True, text=True,
                          timeout=timeout, env=guard_env())


def refused(stderr: str) -> list[str]:
    """The blocked names the run asked for."""
    return [line.split()[1] for line in stderr.splitlines() if line.startswith("REFUSED ")]


def help_commands() -> list[list[str]]:
    """`--help` of pneumo and of every subcommand, nested ones included."""
    out = [["--help"]]

    def walk(parser, prefix):
        for action in parser._actions:
            if getattr(action, "choices", None) and hasattr(action, "_name_parser_map"):
                for name, child in action.choices.items():
                    out.append([*prefix, name, "--help"])
                    walk(child, [*prefix, name])

    walk(build_parser(), [])
    return out


def test_the_guard_refuses_every_training_package():
    assert ISSUE_LIST - {"ray", "pyarrow"} <= set(extras.TRAINING_PACKAGES)
    code = (f"import importlib.util, sys; sys.path[:0] = [{str(GUARD.parent)!r}]; import runtime_guard as g; "
            "g.install(); import pneumo.extras as e; "
            "print([n for n in sorted(g.BLOCKED) if importlib.util.find_spec(n)]); "
            "import scipy")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.stdout.strip() == "[]", res.stdout + res.stderr
    assert "ModuleNotFoundError: No module named 'scipy'" in res.stderr


def test_every_runtime_command_runs_without_the_training_packages(tmp_path):
    images = tmp_path / "images"
    labelled = tmp_path / "labelled"
    for path in sorted(REFERENCE_DIR.glob("*/*.jpeg")):
        (images / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, images / path.parent.name / path.name)
    shutil.copytree(images, labelled)
    data, keys = tmp_path / "data", tmp_path / "keys"
    model = tmp_path / "release" / "pneumo.int8.onnx"
    model.parent.mkdir()
    shutil.copy(DEFAULT_MODEL, model)
    csv_out = tmp_path / "predictions.csv"
    helps = help_commands()
    runtime = [
        ["predict", str(images), "--csv", str(csv_out)],
        ["calibrate", "--folder", str(labelled), "--min-cases", "3", "--data-dir", str(data),
         "--out", str(tmp_path / "site")],
        ["keys", "generate", "--out", str(keys)],
        ["model", "sign", str(model), "--key", str(keys / PRIVATE_NAME)],
        ["model", "install", str(model), "--trusted-key", str(keys / PUBLIC_NAME),
         "--data-dir", str(data)],
        ["model", "status", "--data-dir", str(data)],
        ["history", "check", "--data-dir", str(data)],
        ["history", "backup", "--data-dir", str(data), "--out", str(tmp_path / "backup.sqlite3")],
        ["model", "rollback", "--data-dir", str(data)],
    ]
    training = [["train", "--data", str(images), "--out", str(tmp_path / "run")],
                ["export", "--model", "run", "--calib-data", str(images), "--out", "x"],
                ["gan", "train", "--data", str(images), "--out", str(tmp_path / "gan")]]
    sequence = tmp_path / "sequence.json"
    sequence.write_text(json.dumps(helps + runtime + training))

    res = guarded("--sequence", str(sequence))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    results = json.loads(res.stdout.split("RESULTS ", 1)[1].splitlines()[0])
    codes = {" ".join(r["argv"]): r["code"] for r in results}
    failed = {k: v for k, v in codes.items() if v != (2 if k.split()[0] in TRAINING_COMMANDS
                                                       and "--help" not in k else 0)}
    assert not failed, f"{failed}\n{res.stderr[-4000:]}"
    assert "Traceback" not in res.stderr, res.stderr[-4000:]
    for cmd in ("train", "export", "gan train"):
        assert (f"pneumo {cmd}: needs the training packages" in res.stderr
                and "pip install '.[train]'" in res.stderr), res.stderr[-2000:]
    assert "pip install pneumo" not in res.stderr
    # the runtime commands did their work
    rows = list(csv.DictReader(csv_out.open()))
    assert len(rows) == 6 and {r["label"] for r in rows} == {"NORMAL", "PNEUMONIA"}
    assert (tmp_path / "site" / "proposal.json").is_file()
    assert (tmp_path / "backup.sqlite3").stat().st_size > 0
    installed = list((data / "models").glob("*-pneumo.int8.onnx"))
    assert [p.read_bytes() == model.read_bytes() for p in installed] == [True]
    state = json.loads((data / "models" / "installed.json").read_text())
    assert state["installed"] == []  # installed, then rolled back
    # only the training commands' pre-checks asked for training packages
    asked = set(n.split(".")[0] for n in refused(res.stderr))
    assert asked <= {"tensorflow", "keras", "scipy", "sklearn", "matplotlib", "tf2onnx",
                     "onnx"}, asked


def test_runtime_commands_never_ask_for_a_training_package(tmp_path):
    res = guarded("predict", str(XRAY_NORMAL), str(XRAY_PNEUMONIA))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "NORMAL" in res.stdout and "PNEUMONIA" in res.stdout
    assert refused(res.stderr) == [], refused(res.stderr)


def test_every_app_module_imports_without_the_training_packages():
    res = guarded("--import-all", "pneumo.app")
    assert res.returncode == 0, res.stderr[-3000:]
    names = res.stdout.split()
    assert "pneumo.app.web.api" in names and "pneumo.app.updates.model_store" in names and len(names) > 30
    assert refused(res.stderr) == [], refused(res.stderr)


def test_serve_answers_a_real_xray_without_the_training_packages(tmp_path):
    server = start_server(None, tmp_path / "data", "--open-browser",
                          launcher=[sys.executable, str(GUARD)], env=guard_env())
    try:
        assert http("GET", server.url + "healthz").status == 200
        reply = post_image(server.url, XRAY_PNEUMONIA.read_bytes())
        assert reply.status == 200, reply.body[:500]
        assert reply.json()["label"] == "PNEUMONIA"
        deadline = time.monotonic() + 30  # --open-browser: no browser here, so it prints
        while not any("open " + server.url in line for line in server.lines):
            assert time.monotonic() < deadline, server.lines
            time.sleep(0.1)
        assert server.interrupt() == 0
    finally:
        server.stop()
    assert refused("".join(server.lines)) == [], "".join(server.lines)[-3000:]
