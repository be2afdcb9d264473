"""Real DICOM peers for the receiver tests: dcmtk's echoscu/storescu and an Orthanc server.

Both come from Debian (`apt-get install dcmtk orthanc`, done by .ci/run); tests that need
them skip with that reason where they are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest


def dcmtk(name: str) -> str | None:
    """dcmtk's own `name` on PATH, skipping this Python's bin folder: pynetdicom installs
    console scripts with the same names (echoscu, storescu, ...) and other options there."""
    own = Path(sys.prefix, "bin").resolve()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if folder and Path(folder).resolve() == own:
            continue
        found = shutil.which(name, path=folder)
        if found:
            return found
    return None


ECHOSCU, STORESCU = dcmtk("echoscu"), dcmtk("storescu")
DCMTK_MISSING = ECHOSCU is None or STORESCU is None
ORTHANC_MISSING = shutil.which("Orthanc") is None
needs_dcmtk = pytest.mark.skipif(
    DCMTK_MISSING, reason="dcmtk (echoscu, storescu) is not installed: apt-get install dcmtk")
needs_orthanc = pytest.mark.skipif(
    ORTHANC_MISSING, reason="Orthanc is not installed: apt-get install orthanc")

STORESCU_SYNTAX = {
    "explicit_le": "-xe", "rle": "-xr", "jpeg_baseline": "-xy", "jpeg_extended": "-xx",
    "jpeg_lossless_sv1": "-xs", "jpeg_ls_lossless": "-xt", "jpeg_ls_near_lossless": "-xu",
    "j2k_lossless": "-xv", "j2k": "-xw",
}
"""storescu's option proposing each transfer syntax (benchmarks.dicom_decode.SYNTAXES names)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def echoscu(port: int, *, called: str = "PNEUMO", calling: str = "ECHOSCU"
            ) -> subprocess.CompletedProcess:
    """dcmtk's echoscu against 127.0.0.1:port."""
    return subprocess.run([ECHOSCU or "echoscu", "-aec", called, "-aet", calling, "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=60)


def storescu(port: int, *files: Path, syntax: str = "explicit_le", called: str = "PNEUMO",
             calling: str = "STORESCU") -> subprocess.CompletedProcess:
    """dcmtk's storescu sending `files`, proposing only the contexts they need in `syntax`."""
    return subprocess.run([STORESCU or "storescu", "-R", STORESCU_SYNTAX[syntax], "-aec", called, "-aet",
                           calling, "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=120)


@dataclass
class Orthanc:
    """An Orthanc process with its own storage, on free HTTP and DICOM ports."""

    proc: subprocess.Popen
    http_port: int
    dicom_port: int
    aet: str
    log_path: Path

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return f"http://127.0.0.1:{self.http_port}"

    def rest(self, method: str, path: str, body: bytes | dict | list | None = None):
        """One REST call; the decoded JSON answer (or the raw bytes if not JSON)."""
        data = json.dumps(body).encode() if isinstance(body, dict | list) else body
        req = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def log(self) -> str:
        """What Orthanc printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_orthanc(folder: Path, modalities: dict[str, tuple[str, str, int]],
                  aet: str = "ORTHANC", timeout: float = 60) -> Orthanc:
    """Start Orthanc with a temporary configuration and wait until its REST API answers."""
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "pneumo-test", "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"), "HttpPort": http_port,
        "DicomPort": dicom_port, "DicomAet": aet, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "HttpServerEnabled": True, "DicomServerEnabled": True,
        "DicomModalities": {name: list(m) for name, m in modalities.items()},
        "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True,
        "DicomCheckCalledAet": False, "DicomScuTimeout": 30, "Plugins": [],
        "SaveJobs": False, "StableAge": 1, "ConcurrentJobs": 1,
    }
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config))
    log_path = folder / "orthanc.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(["Orthanc", str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                                cwd=folder)
    server = Orthanc(proc, http_port, dicom_port, aet, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("Orthanc exited:\n" + server.log()[-3000:])
        try:
            server.rest("GET", "/system")
            return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError("Orthanc did not answer:\n" + server.log()[-3000:])
