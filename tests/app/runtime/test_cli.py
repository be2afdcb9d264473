"""`pneumo serve` / `pneumo predict` wiring and the batch command."""

import argparse
import csv
import json
import os
import subprocess
import sys

import pytest
from apptools import REPO, XRAY_NORMAL, noise_png
from tinydata import FIXTURES

from pneumo.app.pipeline.files import iter_inputs
from pneumo.app.runtime.batch import run_batch
from pneumo.app.runtime.cli import add_subcommands, build_parser


def test_add_subcommands_registers_serve_and_predict():
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve"])
    assert callable(args.func)
    assert (args.host, args.port, args.threads) == ("127.0.0.1", None, 4)  # None: remembered/8765/free
    assert args.keep_images is False and args.open_browser is False and args.token is None
    assert args.data_dir is None
    args = parser.parse_args(["predict", "a.png", "dir", "--csv", "o.csv", "--mode", "screening"])
    assert callable(args.func) and args.paths == ["a.png", "dir"] and args.mode == "screening"


def test_pneumo_cli_picks_them_up():
    from pneumo import cli

    parser = cli.build_parser()
    assert callable(parser.parse_args(["serve"]).func)
    assert callable(parser.parse_args(["predict", "x"]).func)


def test_serve_refuses_missing_model(tmp_path, capsys):
    args = build_parser().parse_args(["serve", "--model", str(tmp_path / "none.onnx")])
    assert args.func(args) == 2
    assert "model file not found" in capsys.readouterr().err


def test_iter_inputs(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.jpeg", "sub/b.PNG", "sub/noext", "sub/notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    found = {p.relative_to(tmp_path).as_posix() for p in iter_inputs([tmp_path])}
    assert found == {"a.jpeg", "sub/b.PNG", "sub/noext"}
    assert list(iter_inputs([tmp_path / "notes.txt"])) == [tmp_path / "notes.txt"]


def test_batch_folder_with_failures(tmp_path, test_model_path, capsys, model):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "noise.png").write_bytes(noise_png())
    (bad / "truncated.jpg").write_bytes(XRAY_NORMAL.read_bytes()[:3000])
    out_csv = tmp_path / "out.csv"
    code = run_batch([str(FIXTURES), str(bad), str(tmp_path / "missing.png")],
                     model_path=str(test_model_path), mode="screening", csv_path=str(out_csv))
    cap = capsys.readouterr()
    lines = [json.loads(line) for line in cap.out.splitlines()]
    assert code == 1
    n_fixtures = len(list(FIXTURES.rglob("*.jpeg")))
    assert len(lines) == n_fixtures + 3
    by_file = {os.path.basename(rec["file"]): rec for rec in lines}
    assert by_file["noise.png"]["error"]["code"] == "not_a_chest_xray"
    assert by_file["truncated.jpg"]["error"]["code"] == "undecodable_image"
    assert by_file["missing.png"]["error"]["code"] == "unreadable_file"
    ok = by_file[XRAY_NORMAL.name]
    assert ok["status"] == "ok" and ok["mode"] == "screening"
    assert ok["threshold"] == pytest.approx(model.thresholds["screening"], abs=1e-6)
    for key in ("label", "probability", "model_version", "quality", "timings_ms", "sha256",
                "message", "ood_distance", "confidence"):
        assert key in ok
    assert "id" not in ok and "heatmap_url" not in ok
    assert "FAILED" in cap.err and "noise.png" in cap.err and f"/{n_fixtures + 3}]" in cap.err
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8-sig")))
    assert out_csv.read_bytes().startswith(b"\xef\xbb\xbf")  # spreadsheets read UTF-8
    assert len(rows) == n_fixtures + 3
    assert {r["status"] for r in rows} == {"ok", "error"}
    assert {r["confidence"] for r in rows if r["status"] == "ok"} <= {"clear", "borderline"}
    assert all(r["confidence"] == "" for r in rows if r["status"] == "error")


def test_batch_all_ok_and_bad_mode(test_model_path, capsys):
    assert run_batch([str(XRAY_NORMAL)], model_path=str(test_model_path)) == 0
    assert run_batch([str(XRAY_NORMAL)], model_path=str(test_model_path), mode="nope") == 2


def test_predict_command_in_subprocess(test_model_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "pneumo.app", "predict", str(XRAY_NORMAL),
                        "--model", str(test_model_path)],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout.splitlines()[0])
    assert rec["status"] == "ok" and rec["label"] in ("NORMAL", "PNEUMONIA")


def test_app_never_imports_tensorflow():
    code = ("import sys, pneumo.app.runtime.cli, pneumo.app.web.app, pneumo.app.runtime.server, pneumo.app.runtime.batch, "
            "pneumo.app.web.api, pneumo.app.web.pages, pneumo.app.pipeline.checks, pneumo.app.pipeline.heatmap, pneumo.app.history.store; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'matplotlib', 'tf2onnx', 'onnx')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
