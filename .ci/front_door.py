"""The front door, as a newcomer meets it: run by the python of a fresh venv that got
`pip install .` and nothing else (see .ci/run). Standard library only.

It runs the README's first command, `pneumo serve --open-browser` (on a free loopback port
and a temporary data folder; with no display it prints the address), waits for /healthz,
POSTs a real X-ray to /api/v1/predict, runs `pneumo predict DIR --csv`, `pneumo keys
generate`, `pneumo model sign` and `model install` of the bundled model into the data folder,
stops the server with Ctrl+C, then checks `--help` of every subcommand and that `pneumo
train` without the [train] extra exits 2 with the install hint. Exit 0 only if all hold.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

TRAINING = ("tensorflow", "keras", "jax", "scipy", "sklearn", "matplotlib", "tf2onnx", "onnx")
BIN = Path(sys.executable).parent
CHECKS: list[str] = []


def step(name: str, t0: float) -> None:
    """Record one passed check with its time."""
    CHECKS.append(f"ok  {time.perf_counter() - t0:6.1f} s  {name}")
    print(CHECKS[-1], flush=True)


def fail(msg: str) -> None:
    """Stop with a message."""
    print(f"FRONT DOOR FAILED: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def pneumo(*args: str, expect: int = 0, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed `pneumo` console script; fail unless it exits `expect`."""
    res = subprocess.run([str(BIN / "pneumo"), *args], capture_output=True, text=True,
                         timeout=timeout)
    if res.returncode != expect:
        fail(f"pneumo {' '.join(args)} exited {res.returncode}, not {expect}:\n"
             f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_image(url: str, data: bytes) -> dict:
    """POST one image to /api/v1/predict; the JSON answer."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="xray.jpeg"\r\nContent-Type: image/jpeg\r\n\r\n').encode() + data + \
        f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "api/v1/predict", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; "
                                                          f"boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def subcommands() -> list[tuple[str, ...]]:
    """Every (nested) subcommand of the installed `pneumo`'s parser."""
    import argparse

    from pneumo.cli import build_parser

    found: list[tuple[str, ...]] = []

    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    found.append((*prefix, name))
                    walk(child, (*prefix, name))

    walk(build_parser(), ())
    return found


def main() -> int:
    """Every front-door check in turn."""
    t0 = time.perf_counter()
    present = [n for n in TRAINING if importlib.util.find_spec(n) is not None]
    if present:
        fail(f"this venv is not a base install: {present} are installed")
    shown = subprocess.run([str(BIN / "pip"), "show", "-f", "pneumo"], capture_output=True,
                           text=True, check=True).stdout
    files = [line.strip() for line in shown.splitlines()]
    tops = {f.split("/")[0] for f in files[files.index("Files:") + 1:]
            if f and not f.startswith("..") and ".dist-info" not in f}
    if tops != {"pneumo"}:
        fail(f"the wheel installs the top-level names {sorted(tops)}, not one package `pneumo`")
    # the installed package, not the checkout (cwd is a temp folder)
    pkg = Path(importlib.import_module("pneumo.app").__file__).parent
    if "site-packages" not in str(pkg):
        fail(f"pneumo.app imported from {pkg}, not from the installed wheel")
    xrays = sorted((pkg / "reference_xrays").glob("*/*.jpeg"))
    if len(xrays) != 6:
        fail(f"the reference X-rays are not packaged ({len(xrays)} found under {pkg})")
    step("base install: no training package, one top-level package, reference X-rays packaged",
         t0)

    tmp = Path(tempfile.mkdtemp(prefix="pneumo-front-door-"))
    data, port = tmp / "data", free_port()
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    server = subprocess.Popen(
        [str(BIN / "pneumo"), "serve", "--open-browser", "--port", str(port), "--data-dir",
         str(data)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(server.stdout), daemon=True).start()
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.5)
                fail("pneumo serve --open-browser did not answer /healthz:\n" + "".join(lines))
            time.sleep(0.2)
        step(f"pneumo serve --open-browser answers {url}healthz", t0)
        t0 = time.perf_counter()
        answer = post_image(url, (pkg / "reference_xrays" / "PNEUMONIA" /
                                  "person1_bacteria_1.jpeg").read_bytes())
        if answer.get("label") != "PNEUMONIA":
            fail(f"POST /api/v1/predict of a pneumonia X-ray answered {answer}")
        step(f"POST /api/v1/predict: {answer['label']}, probability "
             f"{answer['probability']:.3f}", t0)
        deadline = time.monotonic() + 30
        while not any(url in line and "open" in line for line in lines):
            if time.monotonic() > deadline:
                fail("--open-browser neither opened a browser nor printed the address:\n"
                     + "".join(lines))
            time.sleep(0.2)

        t0 = time.perf_counter()
        folder = tmp / "images"
        for x in xrays:
            (folder / x.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(x, folder / x.parent.name / x.name)
        pneumo("predict", str(folder), "--csv", str(tmp / "predictions.csv"))
        rows = list(csv.DictReader((tmp / "predictions.csv").open()))
        if len(rows) != 6:
            fail(f"pneumo predict wrote {len(rows)} rows, not 6")
        step("pneumo predict DIR --csv: 6 rows", t0)

        t0 = time.perf_counter()
        release = tmp / "release" / "pneumo.int8.onnx"
        release.parent.mkdir()
        shutil.copy(pkg / "models" / "pneumo.int8.onnx", release)
        pneumo("keys", "generate", "--out", str(tmp / "keys"))
        pneumo("model", "sign", str(release), "--key", str(tmp / "keys" / "pneumo-signing.key"))
        pneumo("model", "install", str(release), "--trusted-key",
               str(tmp / "keys" / "pneumo-signing.pub"), "--data-dir", str(data))
        status = pneumo("model", "status", "--data-dir", str(data)).stdout
        if "active model: installed" not in status:
            fail(f"pneumo model status after the install: {status}")
        step("pneumo keys generate, model sign, model install, model status", t0)
    finally:
        t0 = time.perf_counter()
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            fail("the server did not stop within 30 s of Ctrl+C")
    if code != 0:
        fail(f"the server exited {code} after Ctrl+C:\n" + "".join(lines[-40:]))
    step("Ctrl+C stops the server cleanly (exit 0)", t0)

    t0 = time.perf_counter()
    pneumo("--help")
    commands = subcommands()
    if not {("serve",), ("train",), ("model", "install")} <= set(commands):
        fail(f"pneumo's parser has {commands}")
    for cmd in commands:
        pneumo(*cmd, "--help")
    step(f"--help of all {len(commands)} subcommands exits 0", t0)
    t0 = time.perf_counter()
    res = pneumo("train", "--data", str(folder), "--out", str(tmp / "run"), expect=2)
    if "pip install '.[train]'" not in res.stderr or "Traceback" in res.stderr:
        fail(f"pneumo train without the extra said: {res.stderr}")
    step("pneumo train without the [train] extra exits 2: " + res.stderr.strip(), t0)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"front door: {len(CHECKS)} checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
