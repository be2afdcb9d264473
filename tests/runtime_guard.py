"""Run `pneumo` as the base install (`pip install .`) meets it: training packages are absent.

    python tests/runtime_guard.py ARG...             one `pneumo ARG...` (its exit code)
    python tests/runtime_guard.py --sequence FILE    each argv of a JSON list in turn, in one
                                                     process; writes [{argv, code}] to stdout
    python tests/runtime_guard.py --import-all PKG   import every module of package PKG

Before anything else is imported, the import system is wrapped so that every package of the
`[train]` extra (and Ray/pyarrow, the `[scale]` extra) looks uninstalled: `import scipy`
raises ModuleNotFoundError and `importlib.util.find_spec("scipy")` is None, as on a machine
where pip never installed it, although this venv has it. Every name that was asked for is
printed on stderr as `REFUSED name` so a test can tell a silent fallback from no attempt.
"""

from __future__ import annotations

import importlib.abc
import sys

BLOCKED = frozenset({"tensorflow", "keras", "jax", "jaxlib", "scipy", "sklearn", "matplotlib",
                     "tf2onnx", "onnx", "ray", "pyarrow"})
REFUSED: list[str] = []


class AbsentTrainingPackages(importlib.abc.MetaPathFinder):
    """Delegates to the real finders, except for blocked top-level names (found nowhere)."""

    def __init__(self, finders: list) -> None:
        self.finders = finders

    def find_spec(self, name, path=None, target=None):  # noqa: D102 - importlib protocol
        if name.split(".")[0] in BLOCKED:
            REFUSED.append(name)
            return None
        for finder in self.finders:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None:
                return spec
        return None

    def find_distributions(self, context=None):  # noqa: D102 - importlib.metadata protocol
        from importlib.metadata import DistributionFinder

        context = context or DistributionFinder.Context()
        for finder in self.finders:
            find = getattr(finder, "find_distributions", None)
            for dist in find(context) if find else ():
                top = (dist.read_text("top_level.txt") or dist.metadata["Name"] or "").split()
                if not BLOCKED & {t.replace("-", "_").lower() for t in top}:
                    yield dist

    def invalidate_caches(self) -> None:  # noqa: D102 - importlib protocol
        for finder in self.finders:
            if hasattr(finder, "invalidate_caches"):
                finder.invalidate_caches()


def install() -> None:
    """Wrap sys.meta_path (call before importing the project)."""
    preloaded = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
    if preloaded:
        raise SystemExit(f"already imported before the guard: {preloaded}")
    sys.meta_path[:] = [AbsentTrainingPackages(list(sys.meta_path))]
    here = str(__import__("pathlib").Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p != here]  # tests/ folders must not shadow the package


def _run(argv: list[str]) -> int:
    from pneumo.cli import main

    try:
        return int(main(argv) or 0)
    except SystemExit as exc:  # argparse's --help and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def _import_all(package: str) -> int:
    import importlib
    import pkgutil

    pkg = importlib.import_module(package)
    names = [m.name for m in pkgutil.walk_packages(pkg.__path__, package + ".")]
    for name in names:
        importlib.import_module(name)
    print("\n".join(names))
    return 0


def main(argv: list[str]) -> int:
    """Entry point (see the module docstring)."""
    install()
    try:
        if argv[:1] == ["--import-all"]:
            return _import_all(argv[1])
        if argv[:1] == ["--sequence"]:
            import json
            from pathlib import Path

            results = []
            for one in json.loads(Path(argv[1]).read_text()):
                results.append({"argv": one, "code": _run(one)})
                sys.stdout.flush()
            print("RESULTS " + json.dumps(results))
            return 0
        return _run(argv)
    finally:
        for name in dict.fromkeys(REFUSED):
            print(f"REFUSED {name}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
