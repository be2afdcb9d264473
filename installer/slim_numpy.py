"""numpy without OpenBLAS for the executable: 28 MB less to unpack at every one-file start.

numpy's wheels on PyPI carry OpenBLAS (25 MB, kernels for every x86 CPU generation) and
gfortran (2.8 MB). The app never multiplies large matrices: its heavy arithmetic runs in
ONNX Runtime, and numpy only sees 192-value embeddings, small heatmaps and pixel arrays.
numpy builds from source without BLAS (``-Dblas=none -Dlapack=none``: its own loops and
bundled lapack-lite), which takes the one-file start down by ~0.1-0.15 s on a 2-core
machine (installer/README.md, "Start-up time").

Compiling numpy takes ~5 minutes on 2 cores, so the wheel is built once per numpy version
and Python and kept in a cache folder (``$PNEUMO_BUILD_CACHE``, default
``~/.cache/pneumo-edge-build``). Linux only (where it was measured): the build needs a C
compiler; without one, or if the compile fails, the build keeps PyPI's numpy and says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE_ENV = "PNEUMO_BUILD_CACHE"
MESON_ARGS = ("-Dblas=none", "-Dlapack=none", "-Dallow-noblas=true")
"""numpy's meson options: no BLAS, no LAPACK (numpy's bundled lapack-lite instead)."""
BUILD_TIMEOUT_S = 1800
CHOICES = ("auto", "none", "bundled")
"""--numpy-blas: auto = none on Linux with a C compiler, else bundled (PyPI's wheel)."""


def cache_dir() -> Path:
    """Where built numpy wheels are kept between builds."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "pneumo-edge-build")


def resolve_choice(choice: str) -> str:
    """'none' or 'bundled' for --numpy-blas CHOICE on this machine."""
    if choice != "auto":
        return choice
    has_compiler = any(shutil.which(cc) for cc in ("cc", "gcc", "clang"))
    return "none" if sys.platform.startswith("linux") and has_compiler else "bundled"


def _python_out(py: Path, code: str) -> str:
    return subprocess.run([str(py), "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def numpy_blas(py: Path) -> tuple[str, str]:
    """(numpy version, BLAS name) of the environment whose interpreter is `py`."""
    out = _python_out(py, "import numpy; c = numpy.show_config(mode='dicts'); "
                          "print(numpy.__version__, c['Build Dependencies']['blas']['name'])")
    version, blas = out.split()
    return version, blas


def wheel_folder(py: Path, version: str) -> Path:
    """The cache folder of one numpy version for one Python and platform."""
    tag = _python_out(py, "import sys, sysconfig; "
                          "print(sys.implementation.cache_tag + '-' + sysconfig.get_platform())")
    return cache_dir() / "numpy-noblas" / version / tag


def build_wheel(py: Path, version: str, log) -> Path:
    """The no-BLAS wheel of numpy `version`: from the cache, else compiled now and cached."""
    folder = wheel_folder(py, version)
    found = sorted(folder.glob(f"numpy-{version}-*.whl"))
    if found:
        log(f"numpy {version} without BLAS: cached wheel {found[0]}")
        return found[0]
    log(f"numpy {version} without BLAS: compiling from source once (~5 min on 2 cores), "
        f"cached in {folder}")
    with tempfile.TemporaryDirectory(prefix="numpy-noblas-") as tmp:
        cmd = [str(py), "-m", "pip", "wheel", "-q", "--no-deps", "--no-binary", "numpy",
               f"numpy=={version}", "-w", tmp]
        cmd += [f"-Csetup-args={a}" for a in MESON_ARGS]
        subprocess.run(cmd, check=True, timeout=BUILD_TIMEOUT_S)
        built = sorted(Path(tmp).glob(f"numpy-{version}-*.whl"))
        if not built:
            raise RuntimeError(f"pip wheel made no numpy {version} wheel")
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / (built[0].name + ".part")
        shutil.copy2(built[0], part)
        return part.replace(folder / built[0].name)  # whole wheels only, even if killed


def install_slim_numpy(py: Path, log) -> bool:
    """Swap the venv's numpy for the same version without BLAS; False (PyPI's kept) on failure."""
    version, blas = numpy_blas(py)
    if blas == "none":
        log(f"numpy {version} is already built without BLAS")
        return True
    try:
        wheel = build_wheel(py, version, log)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                        str(wheel)], check=True)
    except (subprocess.SubprocessError, OSError, RuntimeError) as exc:
        log(f"WARNING: numpy without BLAS could not be built ({exc}); keeping PyPI's numpy "
            f"with OpenBLAS (a larger file, a slower start)")
        return False
    version_now, blas_now = numpy_blas(py)
    if blas_now != "none" or version_now != version:
        raise RuntimeError(f"numpy swap failed: now {version_now} with BLAS {blas_now!r}")
    log(f"numpy {version} without BLAS installed (was {blas})")
    return True
