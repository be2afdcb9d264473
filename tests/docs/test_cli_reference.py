"""docs/cli.md and the serve settings table in docs/it.md are generated, never typed.

`python -m pneumo.docs_cli --write` makes them from the argparse parsers (`pneumo` and the
`pneumo-edge` executable) and from the one defaults table (`pneumo.app.config.SETTINGS`);
these tests fail while either file is stale, and check that the generator leaves no command or
flag out and stays light (standard library; no training package, no Flask).
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
from pathlib import Path

from pneumo import docs_cli
from pneumo.extras import TRAINING_PACKAGES

ROOT = Path(__file__).resolve().parents[2]
CLI_DOC = ROOT / docs_cli.CLI_DOC
SETTINGS_DOC = ROOT / docs_cli.SETTINGS_DOC


def run_generator(*args: str) -> subprocess.CompletedProcess:
    """`python -m pneumo.docs_cli ARGS` from the project root."""
    return subprocess.run([sys.executable, "-m", "pneumo.docs_cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_reference_is_current():
    assert CLI_DOC.read_text(encoding="utf-8") == docs_cli.cli_reference(), (
        f"docs/cli.md is stale: run `{docs_cli.COMMAND}`")


def test_settings_table_is_current():
    text = SETTINGS_DOC.read_text(encoding="utf-8")
    assert text.count(docs_cli.SETTINGS_BEGIN) == 1 and text.count(docs_cli.SETTINGS_END) == 1
    block = text.split(docs_cli.SETTINGS_BEGIN)[1].split(docs_cli.SETTINGS_END)[0].strip("\n")
    assert block == docs_cli.settings_block(), (
        f"the settings table in docs/it.md is stale: run `{docs_cli.COMMAND}`")


def walk(parser: argparse.ArgumentParser):
    """A parser and every subcommand parser in it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from walk(child)


def test_every_command_and_flag_is_in_the_reference():
    text = CLI_DOC.read_text(encoding="utf-8")
    missing = []
    for top, _ in docs_cli.parsers():
        for parser in walk(top):
            if f"`{parser.prog}`\n" not in text:
                missing.append(parser.prog)
            for action in parser._actions:
                for flag in action.option_strings:
                    if flag not in ("-h", "--help") and f"`{flag}" not in text:
                        missing.append(f"{parser.prog} {flag}")
    assert not missing, f"left out of docs/cli.md: {missing}"
    assert "`pneumo serve`" in text and "`pneumo-edge`" in text and "--dicom-port" in text


def test_reference_is_the_same_on_every_machine():
    text = docs_cli.cli_reference()
    assert str(ROOT) not in text, "an absolute path of this checkout leaked into docs/cli.md"
    assert "%(" not in text and "%%" not in text


def test_check_fails_on_a_stale_copy_and_write_fixes_it(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(CLI_DOC, docs / "cli.md")
    shutil.copy(SETTINGS_DOC, docs / "it.md")
    assert run_generator("--check", "--root", str(tmp_path)).returncode == 0
    (docs / "cli.md").write_text((docs / "cli.md").read_text().replace("--dicom-port", "--dp"))
    it_text = (docs / "it.md").read_text()
    (docs / "it.md").write_text(it_text.replace("| `threads` | `--threads` | `4` |",
                                                "| `threads` | `--threads` | `8` |"))
    stale = run_generator("--check", "--root", str(tmp_path))
    assert stale.returncode == 1
    assert str(docs / "cli.md") in stale.stderr and str(docs / "it.md") in stale.stderr
    assert docs_cli.COMMAND in stale.stderr
    fixed = run_generator("--write", "--root", str(tmp_path))
    assert fixed.returncode == 0, fixed.stderr
    assert (docs / "cli.md").read_text() == CLI_DOC.read_text()
    assert (docs / "it.md").read_text() == it_text
    assert run_generator("--check", "--root", str(tmp_path)).returncode == 0


def test_check_names_a_page_without_the_settings_markers(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "it.md").write_text("# IT\n")
    res = run_generator("--check", "--root", str(tmp_path))
    assert res.returncode == 1 and docs_cli.SETTINGS_BEGIN in res.stderr


def test_the_generator_is_standard_library_and_imports_nothing_heavy():
    tree = ast.parse(Path(docs_cli.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    outside = imported - set(sys.stdlib_module_names) - {"__future__", "pneumo", "installer"}
    assert not outside, f"pneumo/docs_cli.py imports {outside}"
    heavy = (*TRAINING_PACKAGES, "flask", "flask_babel", "waitress", "onnxruntime")
    code = ("import sys, pneumo.docs_cli as d; d.cli_reference(); d.settings_block(); "
            f"bad = [m for m in {heavy!r} if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
