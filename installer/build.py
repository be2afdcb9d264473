"""Build the one-file `pneumo-edge` executable of the clinic app with PyInstaller.

    python -m installer.build [--onedir] [--dist DIR] [--model PATH] [--reuse-venv]

Steps: copy the project's source into a staging folder (build/exe-src), create a fresh
virtual environment (build/exe-venv) holding only the app's runtime dependencies
(`pip install .`, no extras) plus PyInstaller, run PyInstaller on installer/pneumo-edge.spec
inside it, then check the result: no part of the training stack in the archive (the build
fails otherwise), size under the limit, sha256 written next to the executable.

Run it with any Python 3.11+ (the dev virtualenv is fine: it only launches the build, the
executable is made from the fresh build virtualenv).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import venv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from installer.slim_numpy import CHOICES, install_slim_numpy, numpy_blas, resolve_choice

ROOT = Path(__file__).resolve().parents[1]
NAME = "pneumo-edge"
CONSOLE_NAME = NAME + "-console"
"""The console twin of the windowed Windows program (installer/pneumo-edge.spec)."""
PYINSTALLER = "pyinstaller==6.22.3"
MODEL_RELPATH = Path("pneumo") / "app" / "models" / "pneumo.int8.onnx"
SELFTEST_RELPATH = Path("pneumo") / "app" / "reference_xrays" / "NORMAL" / "IM-0115-0001.jpeg"
REFERENCE_RELPATHS = (SELFTEST_RELPATH, Path("pneumo") / "app" / "reference_xrays" / "PNEUMONIA"
                      / "person1_bacteria_1.jpeg")
"""The reference X-rays a model must label right (pneumo.app.updates.model_store.REFERENCE_XRAYS)."""
DEFAULT_MAX_MB = 60.0

FORBIDDEN = (
    "tensorflow", "tensorboard", "keras", "tf_keras", "tf2onnx", "torch", "torchvision", "jax",
    "onnx", "onnxruntime.transformers", "onnxruntime.quantization", "onnxruntime.tools",
    "matplotlib", "scipy", "sklearn", "pandas", "sympy", "pneumo.train", "pneumo.export", "pneumo.bench",
)
"""Packages that must never be inside the executable (the training stack and its helpers).
Matched as a top-level name or dotted prefix: 'onnx' does not match 'onnxruntime'."""

SOURCE_ITEMS = ("pyproject.toml", "README.md", "pneumo", "installer")
"""What the build needs from the project: what `pip install .` installs (pyproject's packages)
and installer/ (the spec and the launcher PyInstaller reads; not installed)."""

_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info")


class BuildError(RuntimeError):
    """A build step failed; the message says which and why."""


@dataclass
class ArchiveReport:
    """What the built archive holds: module names and file names, plus forbidden hits."""

    modules: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)


def _log(msg: str) -> None:
    print(f"[build] {msg}", flush=True)


def _run(cmd: Sequence[str | os.PathLike], **kw) -> None:
    _log("$ " + " ".join(str(c) for c in cmd))
    res = subprocess.run([str(c) for c in cmd], **kw)
    if res.returncode != 0:
        raise BuildError(f"command failed with exit code {res.returncode}: {cmd[0]} ...")


def venv_python(venv_dir: Path) -> Path:
    """The interpreter inside a virtual environment folder."""
    if os.name == "nt":
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def exe_name(name: str = NAME) -> str:
    """The executable's file name on this platform."""
    return name + (".exe" if os.name == "nt" else "")


def windowed_default() -> bool:
    """Whether the program is windowed (no console) unless asked otherwise: on Windows."""
    return sys.platform == "win32"


def stage_source(root: Path, stage: Path, model: Path | None) -> Path:
    """Copy what `pip install .` needs into a fresh staging folder; returns the staged model."""
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    for item in SOURCE_ITEMS:
        src = root / item
        if src.is_dir():
            shutil.copytree(src, stage / item, ignore=_SKIP)
        elif src.is_file():
            shutil.copy2(src, stage / item)
    if not (stage / "README.md").exists():
        (stage / "README.md").write_text("pneumo\n")
    staged_model = stage / MODEL_RELPATH
    if model is not None:
        staged_model.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(model, staged_model)
    if not staged_model.is_file():
        raise BuildError(
            f"the default model {MODEL_RELPATH} is missing; commit it or pass --model PATH "
            "(the file is then bundled as the default model, the source tree is not changed)"
        )
    for rel in REFERENCE_RELPATHS:
        sample = root / rel
        if not sample.is_file():
            raise BuildError(f"the self-test sample image {rel} is missing")
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sample, stage / rel)
    return staged_model


def make_venv(venv_dir: Path, stage: Path, *, reuse: bool) -> Path:
    """A virtual environment with only the app's runtime dependencies and PyInstaller."""
    py = venv_python(venv_dir)
    if reuse and py.exists():
        _log(f"reusing build virtualenv {venv_dir}")
        _run([py, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(stage)])
        _run([py, "-m", "pip", "install", "-q", str(stage), PYINSTALLER])
        return py
    if venv_dir.exists():
        shutil.rmtree(venv_dir)
    _log(f"creating build virtualenv {venv_dir}")
    venv.EnvBuilder(with_pip=True, clear=True, symlinks=os.name != "nt").create(venv_dir)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    _run([py, "-m", "pip", "install", "-q", str(stage), PYINSTALLER], env=env)
    return py


def choose_numpy(py: Path, blas: str) -> bool:
    """Put numpy without BLAS ('none') or PyPI's ('bundled') in the venv; True when slim."""
    if blas == "none":
        return install_slim_numpy(py, _log)
    version, found = numpy_blas(py)
    if found == "none":  # a reused venv from a slim build: back to PyPI's wheel
        _run([py, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
              "--only-binary", "numpy", f"numpy=={version}"])
    return False


def _is_forbidden(name: str) -> str | None:
    """The forbidden package a dotted module name belongs to, if any."""
    for bad in FORBIDDEN:
        if name == bad or name.startswith(bad + "."):
            return bad
    return None


def _path_forbidden(path: str) -> str | None:
    """The forbidden package a bundled file path belongs to, if any."""
    parts = path.replace("\\", "/").split("/")
    if len(parts) > 1:
        hit = _is_forbidden(".".join(parts[:-1]))  # a file inside a package folder
        if hit:
            return hit
        meta = re.match(r"([A-Za-z0-9_.]+?)-[0-9][^/]*\.(dist|egg)-info$", parts[0])
        if meta:
            return _is_forbidden(meta.group(1).lower().replace("-", "_"))
    name = parts[-1].lower()
    for bad in ("tensorflow", "keras", "torch", "tf2onnx"):
        if name.startswith((bad, "lib" + bad, "_pywrap_" + bad)):
            return bad
    return None


def read_archive(exe: Path) -> ArchiveReport:
    """List what a PyInstaller executable (or one-folder build) holds, via its archive reader."""
    from PyInstaller.archive.readers import CArchiveReader, ZlibArchiveReader

    report = ArchiveReport()
    pkg = CArchiveReader(str(exe))
    pyz_names = []
    for name, entry in pkg.toc.items():
        typecode = entry[-1]
        if typecode == "z":  # the PYZ with the pure-Python modules
            pyz_names.append(name)
        else:
            report.files.append(name)
    for name in pyz_names:
        pyz = pkg.open_embedded_archive(name)
        report.modules.extend(pyz.toc.keys())
    internal = exe.parent / "_internal"
    if internal.is_dir():  # one-folder build: the PYZ and all files sit next to the exe
        for f in internal.rglob("*"):
            if f.is_file():
                rel = f.relative_to(internal).as_posix()
                report.files.append(rel)
                if f.suffix == ".pyz":
                    report.modules.extend(ZlibArchiveReader(str(f)).toc.keys())
    report.forbidden = find_forbidden(report.modules, report.files)
    return report


def find_forbidden(modules: Iterable[str], files: Iterable[str]) -> list[str]:
    """The forbidden packages that bundled module names or file paths belong to."""
    hits = {b for b in (_is_forbidden(m) for m in modules) if b}
    hits |= {b for b in (_path_forbidden(f) for f in files) if b}
    return sorted(hits)


def check_archive(py: Path, exe: Path, out_json: Path) -> ArchiveReport:
    """Read the archive with the build venv's PyInstaller; raise if anything forbidden is in."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[3]);"
        "from installer.build import read_archive;"
        "r = read_archive(__import__('pathlib').Path(sys.argv[1]));"
        "open(sys.argv[2], 'w').write(json.dumps(r.__dict__, indent=1))"
    )
    _run([py, "-c", code, str(exe), str(out_json), str(ROOT)])
    data = json.loads(out_json.read_text())
    report = ArchiveReport(**data)
    _log(f"archive: {len(report.modules)} Python modules, {len(report.files)} other entries")
    if report.forbidden:
        raise BuildError(
            "the executable contains forbidden packages (training stack): "
            + ", ".join(report.forbidden)
            + f". See {out_json} and add them to the excludes in installer/pneumo-edge.spec."
        )
    _log("archive check passed: no " + ", ".join(FORBIDDEN[:6]) + ", ... inside")
    return report


def sha256_file(path: Path) -> str:
    """sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    """Regular files under a folder, symbolic links (PyInstaller makes some) left out."""
    out = []
    for dirpath, _dirs, names in os.walk(folder):
        for n in names:
            f = Path(dirpath) / n
            if not f.is_symlink():
                out.append(f)
    return sorted(out)


def write_checksums(dist: Path, files: Sequence[Path]) -> Path:
    """Write DIST/pneumo-edge.sha256 in `sha256sum -c` format (paths relative to DIST)."""
    out = dist / f"{NAME}.sha256"
    out.write_text("".join(f"{sha256_file(f)}  {f.relative_to(dist).as_posix()}\n"
                           for f in files))
    return out


def tree_size(paths: Iterable[Path]) -> int:
    """Total bytes of files (folders counted recursively)."""
    total = 0
    for p in paths:
        if p.is_dir():
            total += sum(f.stat().st_size for f in _files(p))
        elif p.is_file():
            total += p.stat().st_size
    return total


def _remove(path: Path) -> None:
    """Delete a file or folder left by an earlier build."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def build(*, dist: Path, work: Path, venv_dir: Path, onedir: bool = False,
          model: Path | None = None, reuse_venv: bool = False,
          max_mb: float = DEFAULT_MAX_MB, windowed: bool | None = None,
          numpy_blas: str = "auto") -> Path:
    """Build the executable; returns its path. Raises BuildError on any failure.

    ``windowed`` (default: on Windows) makes the program a windowed one and builds its
    console twin `pneumo-edge-console` beside it (both checked, summed and size-limited).
    ``numpy_blas`` 'none' bundles numpy built without OpenBLAS (installer/slim_numpy.py),
    'bundled' PyPI's numpy; 'auto' is 'none' on Linux with a C compiler.
    """
    t0 = time.perf_counter()
    windowed = windowed_default() if windowed is None else windowed
    stage = work / "exe-src"
    staged_model = stage_source(ROOT, stage, model)
    _log(f"staged source in {stage} (model {staged_model.stat().st_size / 1e6:.1f} MB)")
    py = make_venv(venv_dir, stage, reuse=reuse_venv)
    slim = choose_numpy(py, resolve_choice(numpy_blas))
    t_venv = time.perf_counter()
    dist.mkdir(parents=True, exist_ok=True)
    for old in ([dist / NAME, dist / f"{NAME}.app"] if onedir
                else [dist / exe_name(), dist / exe_name(CONSOLE_NAME)]):
        _remove(old)
    env = dict(os.environ, PNEUMO_EXE_ONEDIR="1" if onedir else "0",
               PNEUMO_EXE_WINDOWED="1" if windowed else "0")
    env.pop("PYTHONPATH", None)
    _run([py, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
          "--distpath", dist, "--workpath", work / "pyinstaller",
          stage / "installer" / f"{NAME}.spec"], cwd=stage, env=env)
    t_pyi = time.perf_counter()
    folder = dist / NAME if onedir else dist
    programs = [folder / exe_name()] + ([folder / exe_name(CONSOLE_NAME)] if windowed else [])
    for program in programs:
        if not program.is_file():
            raise BuildError(f"PyInstaller finished but {program} is missing")
    exe = programs[0]
    check_archive(py, exe, dist / f"{NAME}.contents.json")
    size = tree_size([dist / NAME] if onedir else [exe])
    digest = sha256_file(exe)
    write_checksums(dist, programs if not onedir else _files(dist / NAME))
    freeze = subprocess.run([str(py), "-m", "pip", "freeze", "--exclude-editable"],
                            capture_output=True, text=True, check=False).stdout
    if slim:
        freeze += "# numpy: built from source without BLAS (installer/slim_numpy.py)\n"
    (dist / f"{NAME}.packages.txt").write_text(freeze)
    for program in programs:
        _log(f"built {program}" + (" (windowed)" if windowed and program == exe else ""))
    _log(f"size: {size / 1e6:.1f} MB ({size} bytes){' (whole folder)' if onedir else ''}")
    _log(f"sha256: {digest}  (written to {dist / (NAME + '.sha256')})")
    _log(f"time: {time.perf_counter() - t0:.0f} s (venv {t_venv - t0:.0f} s, "
         f"PyInstaller {t_pyi - t_venv:.0f} s)")
    if (dist / f"{NAME}.app").is_dir():
        _log(f"macOS app: {dist / (NAME + '.app')}")
    if not onedir:
        for program in programs:
            mb = program.stat().st_size / 1e6
            if mb > max_mb:
                raise BuildError(f"{program.name} is {mb:.1f} MB, over the {max_mb:.0f} MB limit")
    return exe


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the build."""
    p = argparse.ArgumentParser(prog="python -m installer.build", description=__doc__.split("\n")[0])
    p.add_argument("--onedir", action="store_true",
                   help="one folder (dist/pneumo-edge/) instead of one file: starts faster, "
                        "fewer antivirus false positives")
    p.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder (default dist)")
    p.add_argument("--work", type=Path, default=ROOT / "build",
                   help="staging and PyInstaller work folder (default build)")
    p.add_argument("--venv", type=Path, default=None,
                   help="build virtualenv (default WORK/exe-venv; recreated unless --reuse-venv)")
    p.add_argument("--reuse-venv", action="store_true",
                   help="keep an existing build virtualenv (faster rebuilds while developing)")
    p.add_argument("--model", type=Path, default=None,
                   help=f"bundle this ONNX file as the default model instead of {MODEL_RELPATH}")
    p.add_argument("--max-mb", type=float, default=DEFAULT_MAX_MB,
                   help="fail if the one-file executable is larger (default 60)")
    p.add_argument("--windowed", action=argparse.BooleanOptionalAction, default=None,
                   help="a windowed program (no console window; logs to the data folder) plus "
                        f"its console twin {CONSOLE_NAME} (default: on Windows only)")
    p.add_argument("--numpy-blas", choices=CHOICES, default="auto",
                   help="none: numpy built without OpenBLAS (28 MB less to unpack at every "
                        "start; compiled once, then cached); bundled: PyPI's numpy; auto "
                        "(default): none on Linux with a C compiler")
    p.add_argument("--deb", action="store_true",
                   help="also package the one-file executable as DIST/pneumo-edge_VERSION_ARCH.deb "
                        "(Linux, needs dpkg-deb)")
    p.add_argument("--deb-from", type=Path, default=None, metavar="EXE",
                   help="package this already built executable as a .deb, without building")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m installer.build`."""
    args = parse_args(argv)
    work = args.work.resolve()
    if (args.deb or args.deb_from) and args.onedir:
        print("[build] FAILED: --deb packages the one-file build (leave out --onedir)",
              file=sys.stderr)
        return 2
    try:
        exe = args.deb_from
        if exe is None:
            exe = build(dist=args.dist.resolve(), work=work,
                        venv_dir=(args.venv or work / "exe-venv").resolve(),
                        onedir=args.onedir, model=args.model.resolve() if args.model else None,
                        reuse_venv=args.reuse_venv, max_mb=args.max_mb,
                        windowed=args.windowed, numpy_blas=args.numpy_blas)
        if args.deb or args.deb_from:
            from installer.deb import make_deb

            deb = make_deb(exe, args.dist.resolve())
            _log(f"package: {deb} ({deb.stat().st_size / 1e6:.1f} MB)")
    except (BuildError, RuntimeError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or ""
        print(f"[build] FAILED: {exc} {detail}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
