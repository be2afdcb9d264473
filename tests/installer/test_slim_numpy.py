"""installer/slim_numpy.py: numpy without OpenBLAS for the executable, built once and cached."""

import sys
from pathlib import Path

import pytest

from installer import slim_numpy
from installer.build import parse_args

PY = Path(sys.executable)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(slim_numpy.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_auto_means_none_only_on_linux_with_a_compiler(monkeypatch):
    assert slim_numpy.resolve_choice("bundled") == "bundled"
    assert slim_numpy.resolve_choice("none") == "none"
    monkeypatch.setattr(sys, "platform", "win32")
    assert slim_numpy.resolve_choice("auto") == "bundled"
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("PATH", "")  # no cc, gcc or clang to be found
    assert slim_numpy.resolve_choice("auto") == "bundled"


def test_the_build_flag():
    assert parse_args([]).numpy_blas == "auto"
    assert parse_args(["--numpy-blas", "bundled"]).numpy_blas == "bundled"
    with pytest.raises(SystemExit):
        parse_args(["--numpy-blas", "mkl"])


def test_this_environment_reports_its_numpy():
    import numpy

    version, blas = slim_numpy.numpy_blas(PY)
    assert version == numpy.__version__ and blas


def test_a_cached_wheel_is_used_without_compiling(cache):
    version = "9.9.9"  # no such numpy: a compile would fail, so only the cache can answer
    folder = slim_numpy.wheel_folder(PY, version)
    assert folder.is_relative_to(cache) and sys.implementation.cache_tag in folder.name
    folder.mkdir(parents=True)
    wheel = folder / f"numpy-{version}-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"PK")
    said = []
    assert slim_numpy.build_wheel(PY, version, said.append) == wheel
    assert "cached wheel" in said[0]


def test_a_failed_compile_keeps_pypis_numpy(cache, monkeypatch):
    # no package index: pip cannot fetch numpy's source, the swap gives up and says so
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    before = slim_numpy.numpy_blas(PY)
    if before[1] == "none":
        pytest.skip("this environment's numpy is already built without BLAS")
    said = []
    assert slim_numpy.install_slim_numpy(PY, said.append) is False
    assert any(line.startswith("WARNING: numpy without BLAS could not be built") for line in said)
    assert slim_numpy.numpy_blas(PY) == before  # nothing changed
    assert not list(cache.rglob("*.whl"))
