"""The app's layers: the pipeline runs without Flask or SQLite, nothing imports upward, no
import cycle (function-local imports included), and the app never imports training code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pneumo

PACKAGE = Path(pneumo.__file__).resolve().parent
LAYERS = {
    "pneumo.app": 0, "pneumo.app.config": 0,
    "pneumo.app.i18n": 1,
    "pneumo.app.pipeline": 2,
    "pneumo.app.history": 3, "pneumo.app.clinic": 3, "pneumo.app.updates": 3,
    "pneumo.app.analysis": 4, "pneumo.app.dicom": 4,
    "pneumo.app.web": 5,
    "pneumo.app.runtime": 6, "pneumo.app.model_facts": 6, "pneumo.app.__main__": 7,
}
"""Lowest first: a module may import its own layer and those below, never one above."""
STAGES = ("pneumo.train", "pneumo.export", "pneumo.bench", "pneumo.scale", "pneumo.cli")


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = modules()


def imported(name: str, path: Path) -> set[str]:
    """The package's modules that a module imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def layer(name: str) -> int | None:
    """The layer of a module of pneumo.app (its longest listed prefix)."""
    best = max((k for k in LAYERS if name == k or name.startswith(k + ".")), key=len,
               default=None)
    return None if best is None else LAYERS[best]


def test_every_app_module_has_a_layer():
    assert [m for m in MODULES if m.startswith("pneumo.app") and layer(m) is None] == []


def test_nothing_imports_upward_and_the_app_never_imports_training_code():
    upward, stages = [], []
    for name, deps in GRAPH.items():
        if not name.startswith("pneumo.app"):
            continue
        for dep in deps:
            if dep.startswith(STAGES):
                stages.append(f"{name} -> {dep}")
            elif dep.startswith("pneumo.app") and layer(dep) > layer(name):
                upward.append(f"{name} -> {dep}")
    assert upward == [] and stages == [], (upward, stages)


def test_no_import_cycle():
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(GRAPH[node]):
            if dep in ("pneumo", "pneumo.app"):  # the package markers import nothing
                continue
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert cycles == [], [" -> ".join(c) for c in cycles]


def test_the_pipeline_loads_neither_flask_nor_sqlite():
    pipeline = sorted(m for m in MODULES if m.startswith("pneumo.app.pipeline"))
    code = ("import importlib, sys\n"
            f"for m in {pipeline!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('flask', 'flask_babel', 'werkzeug', 'sqlite3', '_sqlite3', 'waitress'))\n"
            "web = sorted(m for m in sys.modules if m.startswith(('pneumo.app.web', "
            "'pneumo.app.history', 'pneumo.app.runtime')))\n"
            "print(bad, web)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[] []", res.stdout
    assert len(pipeline) >= 10


def _function_lines(path: Path, qualname: str) -> int:
    """Lines of ``Class.method`` or ``function`` in the module at ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    *owner, name = qualname.split(".")
    scope = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == owner[0]
                 ) if owner else tree
    node = next(n for n in scope.body if isinstance(n, ast.FunctionDef) and n.name == name)
    return node.end_lineno - node.lineno + 1


def test_no_app_module_over_500_lines_and_the_entry_points_stay_short():
    long = {name: n for name, path in MODULES.items() if name.startswith("pneumo.app")
            and (n := len(path.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long, f"split these modules (over 500 lines): {long}"
    assert _function_lines(MODULES["pneumo.app.pipeline.predictor"], "Predictor.predict") <= 40
    assert _function_lines(MODULES["pneumo.app.web.app"], "create_app") <= 40
