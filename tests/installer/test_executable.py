"""End to end: build the one-file `pneumo-edge` executable, then use it as a clinic would.

Builds once per test session with `python -m installer.build` into a temporary folder
(about a minute: fresh build virtualenv + PyInstaller), unless PNEUMO_EXE names an already
built executable (the GitHub workflow builds first, then runs these tests against it).
PNEUMO_EXE_MODEL=PATH bundles that model file when pneumo/app/models/ has none yet.

Only the standard library and pytest are needed here (the executable carries the rest),
and all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from pneumo.app.updates.model_store import REFERENCE_DIR

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REFERENCE_DIR
DEFAULT_MODEL = ROOT / "pneumo" / "app" / "models" / "pneumo.int8.onnx"
MAX_BYTES = 60 * 1000 * 1000
WINDOWS = sys.platform == "win32"
START_TIMEOUT = 60.0
LISTEN_RE = re.compile(r"(http://127\.0\.0\.1:(\d+)/)\s*$")
"""The first line's URL: "... listening on URL" in the app's language, the URL always last."""


def app_version() -> str:
    """The project version from pyproject.toml."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]["version"]


@pytest.fixture(scope="session")
def exe(tmp_path_factory) -> Path:
    """The executable under test: PNEUMO_EXE, or one built now into a temporary dist."""
    given = os.environ.get("PNEUMO_EXE")
    if given:
        path = Path(given).resolve()
        assert path.is_file(), f"PNEUMO_EXE={given} does not exist"
        return path
    model = os.environ.get("PNEUMO_EXE_MODEL")
    if not model and not DEFAULT_MODEL.is_file():
        pytest.skip(f"no default model at {DEFAULT_MODEL} (set PNEUMO_EXE_MODEL=PATH)")
    base = tmp_path_factory.mktemp("exe")
    cmd = [sys.executable, "-m", "installer.build", "--dist", str(base / "dist"),
           "--work", str(base / "work")]
    if model:
        cmd += ["--model", model]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    log = res.stdout + res.stderr
    assert res.returncode == 0, f"build failed ({res.returncode}):\n{log[-6000:]}"
    print(f"build took {time.perf_counter() - t0:.0f} s")
    path = base / "dist" / ("pneumo-edge.exe" if WINDOWS else "pneumo-edge")
    assert path.is_file(), log[-3000:]
    return path


def _multipart(field: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    """A multipart/form-data body with one file field."""
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
        f"filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _request(url: str, data: bytes | None = None, content_type: str | None = None,
             timeout: float = 30.0) -> tuple[int, dict]:
    """(HTTP status, JSON body) of a GET or POST, errors included."""
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _post_image(base: str, path_or_bytes: Path | bytes, name: str = "xray.jpeg"
                ) -> tuple[int, dict]:
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    body, ctype = _multipart("image", name, data, "image/jpeg")
    return _request(base + "api/v1/predict", body, ctype)


def _element(group: int, elem: int, vr: str, value: bytes) -> bytes:
    """One explicit-VR little-endian DICOM data element."""
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB") else b" "
    head = struct.pack("<HH", group, elem) + vr.encode()
    if vr in ("OB", "OW"):
        return head + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def make_dicom(pixels: bytes, rows: int, cols: int) -> bytes:
    """A minimal uncompressed 16-bit (12 bits stored) MONOCHROME2 DICOM file."""
    sop_class, uid = b"1.2.840.10008.5.1.4.1.1.7", b"1.2.826.0.1.3680043.8.498.1"
    meta = (_element(2, 1, "OB", b"\0\1") + _element(2, 2, "UI", sop_class)
            + _element(2, 3, "UI", uid) + _element(2, 0x10, "UI", b"1.2.840.10008.1.2.1"))
    us = lambda v: struct.pack("<H", v)  # noqa: E731
    body = (_element(8, 0x16, "UI", sop_class) + _element(8, 0x18, "UI", uid)
            + _element(8, 0x60, "CS", b"DX") + _element(0x28, 2, "US", us(1))
            + _element(0x28, 4, "CS", b"MONOCHROME2") + _element(0x28, 0x10, "US", us(rows))
            + _element(0x28, 0x11, "US", us(cols)) + _element(0x28, 0x100, "US", us(16))
            + _element(0x28, 0x101, "US", us(12)) + _element(0x28, 0x102, "US", us(11))
            + _element(0x28, 0x103, "US", us(0)) + _element(0x7FE0, 0x10, "OW", pixels))
    group_len = _element(2, 0, "UL", struct.pack("<I", len(meta)))
    return b"\0" * 128 + b"DICM" + group_len + meta + body


def _pillow():
    """PIL.Image if Pillow is installed here (to make a DICOM from a fixture), else None."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


class Running:
    """A started executable: its URL, output so far, and how to stop it."""

    def __init__(self, exe: Path, args: list[str], tmp: Path):
        self.tmp = tmp / "temp"  # the executable's temp folder (one-file unpacking)
        self.tmp.mkdir(parents=True)
        self.cwd = tmp / "elsewhere"  # any current folder must do
        self.cwd.mkdir()
        env = dict(os.environ, TMPDIR=str(self.tmp), TMP=str(self.tmp), TEMP=str(self.tmp))
        env.pop("PNEUMO_DATA_DIR", None)
        kw: dict = {}
        if WINDOWS:
            kw["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        self.proc = subprocess.Popen([str(exe), "--no-browser", *args], cwd=self.cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     encoding="utf-8", errors="replace", **kw)
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            m = LISTEN_RE.search(line)
            if m and not self.url:
                self.url = m.group(1)
                self._listening.set()
        self._listening.set()

    @property
    def output(self) -> str:
        """Everything the executable printed so far."""
        return "".join(self.lines)

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> str:
        """Wait for the 'listening on' line and a 200 from /healthz; returns the base URL."""
        assert self._listening.wait(timeout), f"no 'listening on' line:\n{self.output}"
        assert self.url, f"exited before listening ({self.proc.poll()}):\n{self.output}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, body = _request(self.url + "healthz", timeout=5)
                if status == 200:
                    return self.url
            except OSError:
                pass
            assert time.monotonic() < deadline, f"/healthz never answered:\n{self.output}"
            time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> int:
        """Ask for a clean stop (SIGTERM; Ctrl+Break on Windows) and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.CTRL_BREAK_EVENT if WINDOWS else signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"did not stop within {timeout} s after the stop signal:\n{self.output}")
        return -1


@pytest.fixture
def start(exe, tmp_path):
    """Start the executable with extra arguments; stopped (killed if need be) afterwards."""
    started: list[Running] = []

    def _start(*args: str) -> Running:
        run = Running(exe, list(args), tmp_path / f"run{len(started)}")
        started.append(run)
        return run

    yield _start
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def test_size_and_checksum(exe):
    size = exe.stat().st_size
    assert size <= MAX_BYTES, f"{exe.name} is {size / 1e6:.1f} MB (limit {MAX_BYTES / 1e6:.0f})"
    sums = exe.parent / "pneumo-edge.sha256"
    assert sums.is_file()
    listed = dict(reversed(line.split(maxsplit=1)) for line in sums.read_text().splitlines())
    # one line per program: Windows has the windowed pneumo-edge.exe and its console twin
    assert exe.name in listed and len(listed) <= 2, listed
    assert listed[exe.name] == hashlib.sha256(exe.read_bytes()).hexdigest()


def test_no_training_stack_inside(exe):
    contents = exe.parent / "pneumo-edge.contents.json"
    if not contents.is_file():
        pytest.skip("no contents listing next to the executable")
    listing = json.loads(contents.read_text())
    assert listing["forbidden"] == []
    tops = {m.split(".")[0] for m in listing["modules"]}
    assert not tops & {"tensorflow", "keras", "torch", "tf2onnx", "onnx", "matplotlib", "scipy"}
    assert "onnxruntime" in tops and "pneumo.app.web.app" in listing["modules"]
    assert not any(m.startswith(("pneumo.train", "pneumo.export", "pneumo.bench"))
                   for m in listing["modules"])
    assert not any(m.startswith("onnxruntime.transformers") for m in listing["modules"])
    assert any(f.startswith("pneumo/app/templates/") for f in listing["files"])
    assert any(f.startswith("pneumo/app/static/") for f in listing["files"])
    assert "pneumo/app/models/pneumo.int8.onnx" in listing["files"]


def test_numpy_without_openblas_on_linux(exe):
    """A Linux build with a C compiler bundles numpy built without OpenBLAS (28 MB less to
    unpack at every start), unless the build said it had to keep PyPI's numpy."""
    from installer.slim_numpy import resolve_choice

    contents, packages = (exe.parent / f"pneumo-edge.{n}" for n in ("contents.json",
                                                                    "packages.txt"))
    if not contents.is_file() or resolve_choice("auto") != "none":
        pytest.skip("not a Linux build made here with a C compiler")
    files = json.loads(contents.read_text())["files"]
    openblas = [f for f in files if "openblas" in f.lower() or "gfortran" in f.lower()]
    slim = "numpy: built from source without BLAS" in packages.read_text()
    assert slim == (not openblas), openblas
    if not slim:
        pytest.skip("the build kept PyPI's numpy (see its log): nothing more to check here")


def test_version(exe, tmp_path):
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith(f"pneumo-edge {app_version()}\n"), res.stdout
    assert re.search(r"^model: \S+ \S+ \(sha256 [0-9a-f]{64}\)$", res.stdout, re.M), res.stdout


def test_self_test(exe, tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path), TMP=str(tmp_path), TEMP=str(tmp_path))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    res = subprocess.run([str(exe), "--self-test"], capture_output=True, text=True, timeout=120,
                         cwd=cwd, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "self-test passed" in res.stdout
    assert re.search(r"-> (NORMAL|PNEUMONIA), probability [01]\.\d{3}", res.stdout), res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd"]  # nothing left in temp


def test_install_model_checks_the_signature_inside_the_executable(exe, tmp_path):
    """The release key, PyNaCl and both reference X-rays travel inside the executable."""
    model = ROOT / "pneumo" / "app" / "models" / "pneumo.int8.onnx"  # signed with the release key
    data = tmp_path / "data"
    res = subprocess.run([str(exe), "--install-model", str(model), "--data-dir", str(data)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "signature: ok" in res.stdout
    assert "-> NORMAL" in res.stdout and "-> PNEUMONIA" in res.stdout, res.stdout
    tampered = tmp_path / "pneumo.int8.onnx"
    tampered.write_bytes(model.read_bytes() + b"\0")
    (tmp_path / "pneumo.int8.onnx.sig").write_bytes(
        model.with_name(model.name + ".sig").read_bytes())
    res = subprocess.run([str(exe), "--install-model", str(tampered), "--data-dir", str(data)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "pneumo.int8.onnx.sig does not match" in res.stderr


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux" or not shutil.which("dpkg-deb"),
                    reason="the .deb needs dpkg-deb")
def test_deb_package_of_the_executable(exe, tmp_path):
    """Package the built executable, unpack it into a throwaway root, self-test it there."""
    from debtools import check_deb

    from installer.deb import make_deb

    deb = make_deb(exe, tmp_path / "dist")
    binary = check_deb(deb, tmp_path / "root")
    res = subprocess.run([str(binary), "--self-test"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "self-test passed" in res.stdout, res.stdout + res.stderr
    print(f"{deb.name}: {deb.stat().st_size / 1e6:.1f} MB")


def test_serve_predict_and_stop_cleanly(start, tmp_path):
    data_dir = tmp_path / "data"
    run = start("--port", "0", "--data-dir", str(data_dir))
    base = run.wait_healthy()
    assert f"history: {data_dir}" in run.output
    assert re.search(r"^model: \S+ \S+ \(bundled with the app, sha256 [0-9a-f]{12}\)$",
                     run.output, re.M), run.output
    assert "_MEI" not in run.output and str(run.tmp) not in run.output  # stable paths only

    image = sorted((FIXTURES / "NORMAL").glob("*.jpeg"))[0]
    status, body = _post_image(base, image, image.name)
    assert status == 200, body
    assert body["label"] in ("NORMAL", "PNEUMONIA")
    assert 0.0 <= body["probability"] <= 1.0

    pil = _pillow()
    if pil is not None:  # the same X-ray as a 12-bit DICOM: pydicom works inside
        gray = pil.open(image).convert("L")
        pixels = b"".join(struct.pack("<H", v * 16) for v in gray.tobytes())
        status, body = _post_image(base, make_dicom(pixels, gray.height, gray.width), "x.dcm")
        assert status == 200, body
        assert body["input"]["format"] == "DICOM"

    status, body = _post_image(base, b"not an image", "notes.jpeg")
    assert 400 <= status < 500, (status, body)
    assert "error" in body and body["error"].get("code"), body
    assert _request(base + "healthz")[0] == 200  # still serving

    assert run.stop() == 0, run.output
    assert "stopped" in run.output
    assert not list(run.tmp.glob("_MEI*")), "one-file unpack folder left behind"
    assert sorted(p.name for p in run.tmp.iterdir()) == [], "files left in the temp folder"
    assert sorted(p.name for p in run.cwd.iterdir()) == [], "files written to the current folder"
    assert (data_dir / "history.sqlite3").is_file()


def test_default_port_taken_falls_back_to_a_free_one(start, tmp_path):
    blocker = socket.socket()
    if not WINDOWS:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        blocker.bind(("127.0.0.1", 8765))
        blocker.listen()
    except OSError:
        blocker.close()
        pytest.skip("port 8765 is in use by something else here")
    try:
        run = start("--data-dir", str(tmp_path / "data"))
        base = run.wait_healthy()
        assert "8765 is already in use" in run.output
        assert not base.endswith(":8765/")
        assert run.stop() == 0, run.output
    finally:
        blocker.close()


def _get(url: str, headers: dict | None = None, timeout: float = 30.0) -> tuple[int, str, bytes]:
    """(HTTP status, Content-Type, body) of a GET."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def test_every_accepted_format_language_and_the_report_inside(start, tmp_path):
    """What installer/pneumo-edge.spec leaves out must not be needed: each image type the app
    accepts decodes (PNG 8/16-bit, BMP, TIFF 8/16-bit and CIELab, which converts through
    Pillow's colour management), WebP is refused by the app itself, the heatmap and the
    printed report are served, and every page language has its catalogue and locale data."""
    pil = _pillow()
    if pil is None:
        pytest.skip("Pillow is needed here to make the test images")
    import io

    run = start("--port", "0", "--data-dir", str(tmp_path / "data"))
    base = run.wait_healthy()
    gray = pil.open(sorted((FIXTURES / "NORMAL").glob("*.jpeg"))[0]).convert("L")
    wide = gray.point(lambda v: v * 256, "I").convert("I;16")

    def encoded(img, fmt: str) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        return buf.getvalue()

    images = {"x.png": encoded(gray, "PNG"), "x16.png": encoded(wide, "PNG"),
              "x.bmp": encoded(gray.convert("RGB"), "BMP"),
              "x.tif": encoded(gray.convert("RGB"), "TIFF"), "x16.tif": encoded(wide, "TIFF"),
              "lab.tif": encoded(gray.convert("RGB").convert("LAB"), "TIFF")}
    record = None
    for name, data in images.items():
        status, body = _post_image(base, data, name)
        assert status == 200, (name, body)
        assert body["input"]["format"] in ("PNG", "BMP", "TIFF"), (name, body)
        record = body["id"]
    status, body = _post_image(base, encoded(gray.convert("RGB"), "WEBP"), "x.webp")
    assert 400 <= status < 500 and body["error"].get("code"), (status, body)

    status, ctype, png = _get(f"{base}api/v1/history/{record}/heatmap.png")
    assert status == 200 and ctype.startswith("image/png") and png[:4] == b"\x89PNG"
    english = _get(f"{base}report/{record}", {"Accept-Language": "en"})[2].decode()
    for lang in sorted(p.name for p in (ROOT / "pneumo" / "app" / "translations").iterdir()
                       if (p / "LC_MESSAGES" / "messages.po").is_file()):
        status, _ctype, page = _get(base, {"Accept-Language": lang})
        assert status == 200 and f'lang="{lang}"' in page.decode(), lang
        status, _ctype, report = _get(f"{base}report/{record}", {"Accept-Language": lang})
        assert status == 200 and f'lang="{lang}"' in report.decode(), lang
        assert report.decode() != english, f"the report is not translated into {lang}"
    assert run.stop() == 0, run.output
