"""Helpers for the clinic app tests: test images, a real server process, stdlib HTTP."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tinydata import fixture_images

from pneumo.app.updates.model_store import REFERENCE_DIR

REPO = Path(__file__).resolve().parents[1]

# Fixture X-rays that every model (the sample and the default) accepts.
XRAY_NORMAL = REFERENCE_DIR / "NORMAL" / "IM-0115-0001.jpeg"
XRAY_PNEUMONIA = REFERENCE_DIR / "PNEUMONIA" / "person1_bacteria_1.jpeg"

SKIMAGE_PICTURES = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "text", "page", "coins", "moon",
    "horse", "hubble_deep_field", "immunohistochemistry", "retina", "logo", "clock", "grass",
    "gravel", "brick", "checkerboard", "cell", "colorwheel", "binary_blobs", "microaneurysms",
    "cat", "shepp_logan_phantom",
)
"""scikit-image sample pictures (none is a chest X-ray) that ship inside the package."""


def all_fixture_xrays() -> list[Path]:
    """Every committed fixture X-ray."""
    imgs = fixture_images()
    return imgs["NORMAL"] + imgs["PNEUMONIA"]


def gray_array(path: Path = XRAY_NORMAL) -> np.ndarray:
    """A fixture X-ray as a uint8 array."""
    return np.asarray(Image.open(path).convert("L"))


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    """Encode a Pillow image to bytes."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png16_bytes(path: Path = XRAY_NORMAL) -> bytes:
    """The X-ray as a 16-bit grayscale PNG (values x 257)."""
    a = gray_array(path).astype(np.uint16) * 257
    return encode(Image.fromarray(a), "PNG")


def skimage_picture(name: str) -> np.ndarray:
    """A scikit-image sample picture as uint8 (gray or RGB[A])."""
    import skimage.data

    a = getattr(skimage.data, name)()
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = np.asarray(255 * (a - a.min()) / max(1e-9, float(a.max() - a.min())), dtype=np.uint8)
    return a


def skimage_png(name: str) -> bytes:
    """A scikit-image sample picture encoded as PNG."""
    return encode(Image.fromarray(skimage_picture(name)), "PNG")


def noise_png(size: int = 256, seed: int = 0) -> bytes:
    """Uniform random noise, grayscale PNG."""
    a = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    return encode(Image.fromarray(a), "PNG")


def blank_png(value: int = 128, size: int = 256) -> bytes:
    """A constant grayscale PNG."""
    return encode(Image.new("L", (size, size), value), "PNG")


def document_png() -> bytes:
    """A synthetic document/screenshot: black text lines on white."""
    from PIL import ImageDraw

    img = Image.new("L", (600, 800), 255)
    d = ImageDraw.Draw(img)
    for i in range(30):
        d.text((30, 20 + 25 * i), "Patient report: lorem ipsum dolor sit amet, 12345 " * 2, fill=0)
    return encode(img, "PNG")


def dicom_bytes(path: Path = XRAY_NORMAL, *, photometric: str = "MONOCHROME2",
                slope: float = 2.0, intercept: float = -1024.0,
                window: tuple[float, float] | None = None,
                transfer_syntax: str | None = None, encapsulated: bytes | None = None) -> bytes:
    """A DICOM file made from a fixture X-ray (16-bit stored values, rescale, window)."""
    from pneumo.app.dicom.samples import encode_dicom

    g = gray_array(path).astype(np.float64)
    shown = g if photometric == "MONOCHROME2" else 255.0 - g
    # Stored values such that slope * stored + intercept = 8 * shown (a 0..2040 "HU" range).
    stored = np.round((8.0 * shown - intercept) / slope).astype(np.uint16)
    return encode_dicom(stored, photometric=photometric, slope=slope, intercept=intercept,
                        window=window, transfer_syntax=transfer_syntax,
                        encapsulated=encapsulated, patient_name="Test^Fixture")


def rewrite_model(src: Path, dst: Path, **changes) -> Path:
    """Copy an ONNX model to `dst` with its "pneumo" metadata updated (a None value deletes)."""
    import onnx

    from pneumo.app.pipeline.onnx_model import METADATA_KEY

    m = onnx.load(str(src))
    prop = next(p for p in m.metadata_props if p.key == METADATA_KEY)
    meta = json.loads(prop.value)
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    prop.value = json.dumps(meta)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(dst))
    return dst


# --- HTTP with the standard library -------------------------------------------------------

@dataclass
class Reply:
    """An HTTP answer."""

    status: int
    headers: dict
    body: bytes

    def json(self) -> dict:
        """The body parsed as JSON."""
        return json.loads(self.body)


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request."""
    boundary = "----pneumo" + uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                  .encode())
        out.write(value.encode() + b"\r\n")
    for name, (filename, data) in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                  f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                  .encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def http(method: str, url: str, *, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 60) -> Reply:
    """One HTTP request; 4xx/5xx answers are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def post_image(base_url: str, data: bytes, *, filename: str = "xray.jpeg",
               fields: dict | None = None, headers: dict | None = None) -> Reply:
    """POST an image to /api/v1/predict."""
    body, ctype = multipart(fields or {}, {"image": (filename, data)})
    return http("POST", base_url.rstrip("/") + "/api/v1/predict", body=body,
                headers={"Content-Type": ctype, **(headers or {})})


# --- a real Waitress server in a subprocess ------------------------------------------------

@dataclass
class LiveServer:
    """A `python -m pneumo.app serve` process on a free loopback port."""

    proc: subprocess.Popen
    url: str
    data_dir: Path
    lines: list[str] = field(default_factory=list)

    def kill(self) -> None:
        """SIGKILL the server (no clean shutdown)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl+C (SIGINT, run_server's clean stop); its exit code.

        A server still running after ``timeout`` is made to dump every thread's stack
        (faulthandler, on by PYTHONFAULTHANDLER in start_server) and the test fails with
        its output: where a stop hangs is then in the log, not a bare timeout.
        """
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            self.proc.send_signal(signal.SIGCONT)  # in case it was stopped (SIGSTOP)
            self.proc.wait(timeout=30)
            time.sleep(0.5)  # the output pump reads the dump
            raise AssertionError(f"no clean stop within {timeout:.0f} s of Ctrl+C; the "
                                 f"server's output and thread stacks:\n" + "".join(self.lines)
                                 ) from None

    def stop(self) -> None:
        """Terminate the server politely, then hard."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout:
            self.proc.stdout.close()


LISTENING_URL = re.compile(r"(http://\S+/)\s*$")
"""The page's URL: the end of the server's first line ("pneumo clinic app listening on URL"
in English; the words follow the server's language, the URL stays last)."""


def _default_sigint() -> None:
    """In the child: Ctrl+C as from a terminal, even when the tests run as a background job.

    A shell starts background jobs with SIGINT ignored, children inherit that, and Python
    then installs no KeyboardInterrupt handler: the server would ignore the tests' Ctrl+C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_server(model_path: Path | None, data_dir: Path, *extra: str,
                 timeout: float = 60, port: str | None = "0",
                 launcher: list[str] | None = None, env: dict | None = None) -> LiveServer:
    """Start the app under Waitress on 127.0.0.1 and an OS-chosen port; wait until it answers.

    ``model_path`` None: no --model (the data folder's installed model, else the bundled one);
    ``port`` None: no --port (the port remembered for the data folder, else 8765, else free);
    ``launcher``: the command before ``serve`` (default ``python -m pneumo.app``).
    """
    env = dict(env or os.environ, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    model = ["--model", str(model_path)] if model_path is not None else []
    ports = ["--port", port] if port is not None else []
    launcher = launcher or [sys.executable, "-m", "pneumo.app"]
    cmd = [*launcher, "serve", "--host", "127.0.0.1", *ports,
           *model, "--data-dir", str(data_dir), *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1,
                            preexec_fn=_default_sigint if os.name == "posix" else None)
    lines: list[str] = []
    q: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.append(line)
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    url = None
    while True:  # the banner ends with "press Ctrl+C to stop" (in the server's language)
        try:
            line = q.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not start:\n" + "".join(lines))
        m = LISTENING_URL.search(line)
        if m and url is None:
            url = m.group(1)
        if url and "Ctrl+C" in line:
            break
    server = LiveServer(proc=proc, url=url, data_dir=data_dir, lines=lines)
    while time.monotonic() < deadline:
        try:
            if http("GET", url + "healthz", timeout=5).status == 200:
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("server did not answer /healthz:\n" + "".join(lines))
