"""The `pneumo` command line: one entry point, every subcommand registered, clean errors."""

import subprocess
import sys

from pneumo.cli import build_parser, main


def test_every_subcommand_is_registered():
    main(["--version"])  # loads the optional stages' subcommands
    choices = build_parser()._subparsers._group_actions[0].choices
    assert {"train", "evaluate", "gan", "ablation", "export", "serve", "predict",
            "bench"} <= set(choices)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "0.1.0"


def test_a_wrong_path_is_an_error_message_not_a_traceback(tmp_path, capsys):
    rc = main(["evaluate", "--model", "pneumo/app/models/pneumo.int8.onnx",
               "--data", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert rc == 2 and "data folder not found" in err and "Traceback" not in err


def test_serving_never_imports_tensorflow():
    code = ("import sys; from pneumo.cli import main; import pneumo.app.web.app, pneumo.app.runtime.cli; "
            "main(['--version']); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
