"""installer/elfstrip.py: debug info stripped from a real wheel extension (Pillow's FreeType
module), the copy still loads; a library whose segments would no longer be aligned (what
binutils does to some auditwheel-patched libraries) is refused; the libraries an extension
needs and its RUNPATH are read as the dynamic loader reads them."""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import struct
import sys
from pathlib import Path

import pytest

from installer.elfstrip import (
    _EHDR,
    _PHDR,
    PT_LOAD,
    dynamic_deps,
    has_debug_info,
    loadable,
    strip_debug,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not shutil.which("strip"),
                                reason="Linux ELF files and binutils' strip")


def _extension_with_debug_info() -> Path:
    for name in ("PIL._imagingft", "PIL._imaging", "nacl._sodium"):
        spec = importlib.util.find_spec(name)
        if spec and spec.origin and has_debug_info(spec.origin):
            return Path(spec.origin)
    pytest.skip("no installed extension carries debug info here")


def test_strip_debug_keeps_a_loadable_library(tmp_path):
    src = _extension_with_debug_info()
    dst = tmp_path / src.parent.name / src.name  # the same layout: its RPATH finds *.libs/
    for libs in src.parent.parent.glob("*.libs"):
        (tmp_path / libs.name).symlink_to(libs)
    assert strip_debug(src, dst)
    assert dst.stat().st_size < src.stat().st_size
    assert not has_debug_info(dst) and loadable(dst)
    ctypes.CDLL(str(dst))  # the dynamic loader accepts it
    assert not strip_debug(dst, tmp_path / "again.so")  # nothing left to strip
    assert not (tmp_path / "again.so").exists()


def test_misaligned_segments_and_non_elf_files_are_refused(tmp_path):
    src = _extension_with_debug_info()
    data = bytearray(src.read_bytes())
    phoff, phentsize, phnum = (_EHDR.unpack_from(data)[i] for i in (5, 9, 10))
    for i in range(phnum):
        at = phoff + i * phentsize
        fields = list(_PHDR.unpack_from(data, at))
        if fields[0] == PT_LOAD and fields[2]:
            fields[2] += 8  # p_offset no longer congruent with p_vaddr
            struct.pack_into(_PHDR.format, data, at, *fields)
            break
    bad = tmp_path / "bad.so"
    bad.write_bytes(bytes(data))
    assert loadable(src) and not loadable(bad)
    assert not strip_debug(bad, tmp_path / "out.so")
    text = tmp_path / "notes.txt"
    text.write_text("not an ELF file")
    assert not loadable(text) and not has_debug_info(text)


def test_dynamic_deps_match_the_dynamic_loader(tmp_path):
    spec = importlib.util.find_spec("PIL._imaging")
    needed, runpath = dynamic_deps(spec.origin)
    assert "libc.so.6" in needed or any(n.startswith("libc.") for n in needed)
    readelf = shutil.which("readelf")
    if readelf:  # binutils' view of the same dynamic section
        import subprocess

        out = subprocess.run([readelf, "-dW", spec.origin], capture_output=True, text=True).stdout
        assert needed == [line.split("[", 1)[1].rstrip("]") for line in out.splitlines()
                          if "(NEEDED)" in line]
        paths = [p for line in out.splitlines() if "(RUNPATH)" in line or "(RPATH)" in line
                 for p in line.split("[", 1)[1].rstrip("]").split(":") if p]
        assert runpath == paths
    vendored = [n for n in needed if "-" in n.split(".so")[0]]  # auditwheel's hashed names
    if vendored:  # a wheel's copy: found next to the package through $ORIGIN
        assert any(d.startswith("$ORIGIN") for d in runpath)
    text = tmp_path / "notes.txt"
    text.write_text("not an ELF file")
    assert dynamic_deps(text) == ([], [])
