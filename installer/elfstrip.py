"""Strip DWARF debug info from Linux shared libraries for the executable, safely; and read
which libraries an ELF file needs and where it looks for them (DT_NEEDED, DT_RUNPATH).

Some wheels ship their Python extensions with full debug info (pylibjpeg's ``_libjpeg``
and ``_openjpeg``, PyNaCl's ``_sodium``, Pillow's ``_imaging``: about 18 MB of the 150 MB
that the one-file program unpacks at every start). ``strip --strip-debug`` removes it, but
binutils can break libraries that auditwheel rewrote with patchelf (numpy's OpenBLAS then
fails with "ELF load command address/offset not page-aligned"), so a stripped copy is only
used when its loadable segments are still aligned; else the original is kept.

Used by installer/pneumo-edge.spec at build time (standard library only; ELF64
little-endian, i.e. x86-64 and aarch64 Linux).
"""

from __future__ import annotations

import logging
import shutil
import struct
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_DYN = struct.Struct("<qQ")
PT_LOAD = 1
PT_DYNAMIC = 2
DT_NEEDED, DT_STRTAB, DT_RPATH, DT_RUNPATH = 1, 5, 15, 29
PAGE = 4096


def _header(data: bytes) -> tuple | None:
    """The ELF64 little-endian file header fields, or None for anything else."""
    if len(data) < _EHDR.size or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    return _EHDR.unpack_from(data)


def section_names(path: str | Path) -> set[str]:
    """Names of an ELF64 file's sections (empty if it is not one or has no section table)."""
    data = Path(path).read_bytes()
    hdr = _header(data)
    if hdr is None:
        return set()
    shoff, shentsize, shnum, shstrndx = hdr[6], hdr[11], hdr[12], hdr[13]
    if not shoff or shstrndx >= shnum or shoff + shnum * shentsize > len(data):
        return set()
    sections = [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
    strtab_off, strtab_size = sections[shstrndx][4], sections[shstrndx][5]
    strtab = data[strtab_off:strtab_off + strtab_size]
    names = set()
    for sec in sections:
        end = strtab.find(b"\0", sec[0])
        names.add(strtab[sec[0]:end if end >= 0 else None].decode("ascii", "replace"))
    return names


def has_debug_info(path: str | Path) -> bool:
    """Whether an ELF file carries DWARF debug info (.debug_info)."""
    return ".debug_info" in section_names(path)


def loadable(path: str | Path) -> bool:
    """Whether every PT_LOAD segment is aligned and inside the file (what ld.so checks)."""
    data = Path(path).read_bytes()
    hdr = _header(data)
    if hdr is None:
        return False
    phoff, phentsize, phnum = hdr[5], hdr[9], hdr[10]
    if phoff + phnum * phentsize > len(data):
        return False
    loads = 0
    for i in range(phnum):
        p_type, _flags, offset, vaddr, _paddr, filesz, _memsz, align = _PHDR.unpack_from(
            data, phoff + i * phentsize)
        if p_type != PT_LOAD:
            continue
        loads += 1
        if offset + filesz > len(data) or (vaddr - offset) % PAGE:
            return False
        if align > 1 and offset % align != vaddr % align:
            return False
    return loads > 0


def strip_debug(src: str | Path, dst: str | Path, strip: str | None = None) -> bool:
    """Write a copy of ``src`` without debug info to ``dst``; False (``dst`` untouched or
    removed) when there is nothing to strip, no strip tool, or the result fails `loadable`."""
    src, dst = Path(src), Path(dst)
    strip = strip or shutil.which("strip")
    if not strip or not has_debug_info(src) or not loadable(src):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    done = subprocess.run([strip, "--strip-debug", str(dst)], capture_output=True, text=True)
    if done.returncode != 0 or not loadable(dst) or has_debug_info(dst):
        log.warning("not stripping %s: %s", src.name,
                    done.stderr.strip() or "the stripped copy would not load")
        dst.unlink(missing_ok=True)
        return False
    return True


def dynamic_deps(path: str | Path) -> tuple[list[str], list[str]]:
    """(DT_NEEDED names, DT_RUNPATH or else DT_RPATH entries) of an ELF64 file; ([], []) for
    anything else. Entries keep ``$ORIGIN`` as written."""
    data = Path(path).read_bytes()
    hdr = _header(data)
    if hdr is None:
        return [], []
    phoff, phentsize, phnum = hdr[5], hdr[9], hdr[10]
    phdrs = [_PHDR.unpack_from(data, phoff + i * phentsize) for i in range(phnum)
             if phoff + (i + 1) * phentsize <= len(data)]
    dyn = next((p for p in phdrs if p[0] == PT_DYNAMIC), None)
    if dyn is None:
        return [], []
    entries = []
    for off in range(dyn[2], min(dyn[2] + dyn[5], len(data) - _DYN.size + 1), _DYN.size):
        tag, val = _DYN.unpack_from(data, off)
        if tag == 0:
            break
        entries.append((tag, val))
    strtab = next((v for t, v in entries if t == DT_STRTAB), None)
    # DT_STRTAB is an address: find its place in the file through the PT_LOAD segments
    base = next((p[2] + strtab - p[3] for p in phdrs if p[0] == PT_LOAD and strtab is not None
                 and p[3] <= strtab < p[3] + p[5]), None)
    if base is None:
        return [], []

    def text(offset: int) -> str:
        end = data.find(b"\0", base + offset)
        return data[base + offset:end].decode("utf-8", "replace")

    needed = [text(v) for t, v in entries if t == DT_NEEDED]
    runpath = [text(v) for t, v in entries if t == DT_RUNPATH]
    rpath = [text(v) for t, v in entries if t == DT_RPATH]
    paths = [d for entry in (runpath or rpath) for d in entry.split(":") if d]
    return needed, paths
