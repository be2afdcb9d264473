"""What machine a benchmark ran on: CPU, SIMD flags, cores, memory, OS, library versions."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
             "amx_bf16", "asimd", "asimddp", "i8mm", "sve")
"""SIMD features that decide which int8/fp32 kernels ONNX Runtime and oneDNN can use."""

PACKAGES = ("onnxruntime", "onnx", "numpy", "pillow", "pydicom", "tensorflow", "keras",
            "tf2onnx", "flask", "waitress", "psutil")


def _cpuinfo(text: str | None = None) -> tuple[str, set[str]]:
    """(CPU model name, set of flags) parsed from /proc/cpuinfo text."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            text = ""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def cpu_flags(flags: set[str]) -> dict[str, bool]:
    """The relevant SIMD flags as booleans (AVX-512 VNNI under either spelling)."""
    out = {f: f in flags for f in CPU_FLAGS}
    out["avx512_vnni"] = out["avx512_vnni"] or "avx512vnni" in flags
    return out


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions (None when absent) without importing the packages."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def usable_cores() -> int:
    """Cores this process may run on (affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    """1/5/15-minute load averages, None where the OS has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict:
    """Everything about this machine that a latency number depends on."""
    model, flags = _cpuinfo()
    info: dict = {
        "cpu_model": model or platform.processor() or platform.machine(),
        "architecture": platform.machine(),
        "logical_cores": os.cpu_count() or 1,
        "physical_cores": None,
        "usable_cores": usable_cores(),
        "cpu_flags": cpu_flags(flags),
        "memory_total_gb": None,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "versions": package_versions(),
        "load_average": load_average(),
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_total_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # psutil is a dev dependency only
        pass
    return info


def describe(info: dict) -> str:
    """One line: CPU, cores, flags, OS (for report headers)."""
    flags = ", ".join(k.upper() for k, v in info.get("cpu_flags", {}).items() if v) or "none"
    return (f"{info.get('cpu_model')} ({info.get('usable_cores')} usable / "
            f"{info.get('logical_cores')} logical cores; SIMD: {flags}); "
            f"{info.get('memory_total_gb')} GiB RAM; {info.get('os')}; Python {info.get('python')}")
