"""Launcher of the `pneumo-edge` executable: the clinic app, served by Waitress.

Same serving flags as `pneumo serve` (declared once, pneumo.app.runtime.cli.add_serve_arguments)
plus --no-browser, --version, --self-test, --stop and --log-file. The serving itself is
`pneumo.app.runtime.server.run_server`; this file only adds what a double-clicked program needs: a
free port when the default one is taken, the browser opened at the page, a clean stop
on Ctrl+C, SIGTERM/SIGHUP, Ctrl+Break and (Windows) closing the console window, and a log
file when there is no console to print to (the windowed Windows program, whose
sys.stdout/sys.stderr are None, and the macOS app started from the Finder): then the log
and everything printed go to ``<data folder>/logs/pneumo-edge.log`` (rotating).

It also runs unfrozen (`python installer/entry.py ...`), which the tests use.
"""

from __future__ import annotations

import os

# ONNX Runtime (1.2x+) has built-in telemetry that, on import, writes a session file to the
# temp folder; an offline clinic app writes nothing outside its data folder. Must be set
# before onnxruntime is imported.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import io  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TextIO  # noqa: E402

PROG = "pneumo-edge"
SELFTEST_NAME = "IM-0115-0001.jpeg"
SELFTEST_EXPECTED = "NORMAL"
LOG_FILE_ENV = "PNEUMO_LOG_FILE"
LOG_NAME = "pneumo-edge.log"
"""The log file in ``<data folder>/logs/`` when there is no console."""
STOP_PATH = "api/v1/shutdown"
"""The running app's stop request (POST), relative to its address in instance.json."""
STOP_WAIT_S = 30.0

_stopped = threading.Event()  # set once the server has shut down (the console handler waits)


def is_frozen() -> bool:
    """True inside the PyInstaller executable."""
    return bool(getattr(sys, "frozen", False))


def bundle_dir() -> Path:
    """Where bundled data lies: the unpacked bundle, or the source tree when not frozen."""
    if is_frozen():
        return Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent))
    return Path(__file__).resolve().parents[1]


def selftest_image() -> Path:
    """The real X-ray used by --self-test (bundled as data)."""
    if is_frozen():
        return bundle_dir() / "selftest" / SELFTEST_NAME
    return bundle_dir() / "pneumo" / "app" / "reference_xrays" / SELFTEST_EXPECTED / SELFTEST_NAME


def app_version() -> str:
    """The app's version (the `pneumo` package version)."""
    try:
        from pneumo import __version__
    except ImportError:  # pragma: no cover - pneumo is always bundled
        return "unknown"
    return str(__version__)


def build_parser() -> argparse.ArgumentParser:
    """The executable's command line."""
    from pneumo.app.runtime.cli import add_serve_arguments

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Offline pediatric chest X-ray pneumonia screening: the clinic web app. "
                    "Decision support only; a clinician must read the image and decide.",
    )
    add_serve_arguments(p, executable=True)
    p.add_argument("--no-browser", action="store_true",
                   help="do not open the page in the default browser")
    p.add_argument("--version", action="store_true",
                   help="print the app and model versions and exit")
    p.add_argument("--install-model", metavar="MODEL.onnx", default=None,
                   help="verify the model's signature (MODEL.onnx.sig), check and self-test "
                        "it, and make it the model of this data folder; then exit")
    p.add_argument("--trusted-key", metavar="PUBLIC", default=None,
                   help="with --install-model: the public key to trust (default: the release "
                        "key inside the app)")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="with --install-model: install without a valid signature (audited)")
    from pneumo.app.runtime.autostart import add_autostart_options

    add_autostart_options(p)
    p.add_argument("--backup", metavar="FILE", default=None,
                   help="copy the history database to FILE (safe while the app is serving) "
                        "and exit")
    p.add_argument("--self-test", action="store_true",
                   help="classify a bundled sample X-ray, print the result; exit 0 only if "
                        "the model gives the sample's known label")
    p.add_argument("--stop", action="store_true",
                   help="stop the app that serves this data folder (--data-dir), wait until it "
                        "has exited, and exit")
    p.add_argument("--log-file", metavar="FILE", default=None,
                   help=f"write the log and all messages to FILE (rotating, {LOG_NAME}.1..3) "
                        f"instead of the console (also ${LOG_FILE_ENV}); without a console the "
                        f"app does so anyway, in <data folder>/logs/{LOG_NAME}")
    return p


def model_path(arg: str | None, data_dir: str | None = None) -> Path:
    """The model file to use: --model, else the one installed in the data folder, else bundled."""
    from pneumo.app.updates.model_store import serving_model

    return serving_model(arg, data_dir)


def port_is_free(host: str, port: int) -> bool:
    """Whether (host, port) can be bound now (pneumo.app.runtime.instance.port_is_free)."""
    from pneumo.app.runtime.instance import port_is_free as free

    return free(host, port)


def choose_port(host: str, requested: int | None, out: TextIO | None = None) -> int:
    """The port to listen on when nothing is remembered (pneumo.app.runtime.instance.choose_port)."""
    from pneumo.app.runtime.instance import choose_port as choose

    return choose(host, requested, out)


def print_version(path: Path) -> int:
    """Print the app, model and runtime versions; 1 if the model cannot be read."""
    print(f"{PROG} {app_version()}")
    try:
        import onnxruntime

        from pneumo.app.pipeline.onnx_model import OnnxModel

        m = OnnxModel(path)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        print(f"model: cannot load {path}: {exc}")
        return 1
    print(f"model: {m.name} {m.version} (sha256 {m.sha256})")
    print(f"onnxruntime {onnxruntime.__version__}, Python {sys.version.split()[0]}")
    return 0


def self_test(path: Path) -> int:
    """Load the model, classify the bundled X-ray, print the result; 0 on success, 1 if not.

    Fails when the sample's label is wrong: the label comes from the model's own threshold
    (balanced mode, from its metadata), so a replaced model is judged by its own numbers.
    """
    t0 = time.perf_counter()
    try:
        from pneumo.app.pipeline.onnx_model import OnnxModel
        from pneumo.app.pipeline.predictor import Predictor

        model = OnnxModel(path)
        t_load = time.perf_counter()
        sample = selftest_image()
        pred = Predictor(model).predict(sample.read_bytes(), heatmap=True)
    except Exception as exc:  # noqa: BLE001 - the point is to report any failure
        print(f"self-test FAILED: {type(exc).__name__}: {exc}")
        return 1
    problems = []
    try:
        dicom_note = _dicom_check(sample.read_bytes())
    except Exception as exc:  # noqa: BLE001
        dicom_note = f"FAILED ({type(exc).__name__}: {exc})"
        problems.append("DICOM decoding does not work")
    if not 0.0 <= pred.probability <= 1.0:
        problems.append(f"probability {pred.probability} outside [0, 1]")
    if pred.label not in model.class_names:
        problems.append(f"unknown label {pred.label!r}")
    if not pred.heatmap_png:
        problems.append("no heatmap was made")
    print(f"model: {model.name} {model.version} ({path.name}, loaded in "
          f"{(t_load - t0) * 1000:.0f} ms)")
    print(f"sample: {sample.name} (a {SELFTEST_EXPECTED} X-ray) -> {pred.label}, "
          f"probability {pred.probability:.3f} (threshold {pred.threshold:.3f}), "
          f"{pred.timings_ms.get('total', 0):.0f} ms")
    print(f"DICOM decoding: {dicom_note}")
    if pred.label != SELFTEST_EXPECTED:  # judged with the model's own threshold (its metadata)
        problems.append(f"the model calls the {SELFTEST_EXPECTED} sample {pred.label}")
    if problems:
        print("self-test FAILED: " + "; ".join(problems))
        return 1
    print("self-test passed")
    return 0


def _dicom_check(image: bytes) -> str:
    """Wrap the sample's pixels in a 16-bit DICOM file and decode it as uploads are."""
    import numpy as np

    from pneumo.app.dicom.samples import decoder_status, encode_dicom
    from pneumo.app.pipeline.decode import decode_image

    gray = np.asarray(decode_image(image).gray, dtype=np.uint16) * 16  # 12-bit range
    plain = encode_dicom(gray, bits_stored=12)
    decoded = decode_image(plain)
    if decoded.format != "DICOM" or decoded.gray.size != (gray.shape[1], gray.shape[0]):
        raise ValueError(f"decoded as {decoded.format} {decoded.gray.size}")
    missing = [uid for uid, ok in decoder_status().items() if not ok]
    if missing:
        raise ValueError(f"no decoder for the transfer syntaxes {', '.join(missing)}")
    j2k = decode_image(_compressed(plain, "1.2.840.10008.1.2.4.90"))  # JPEG 2000 lossless
    if j2k.gray.tobytes() != decoded.gray.tobytes():
        raise ValueError("a JPEG 2000 lossless copy decodes to other pixels")
    return (f"ok ({decoded.bit_depth}-bit, {decoded.gray.size[0]} x {decoded.gray.size[1]}; "
            f"compressed: {len(decoder_status())} transfer syntaxes, JPEG 2000 round trip)")


def _compressed(data: bytes, transfer_syntax: str) -> bytes:
    """A DICOM file re-encoded in a compressed transfer syntax (pydicom + pylibjpeg)."""
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.compress(transfer_syntax, encoding_plugin="pylibjpeg")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _restore_child_env() -> None:
    """Give programs we start (the browser) the environment from before the bootloader."""
    if not (is_frozen() and sys.platform.startswith("linux")):
        return
    orig = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if orig is not None:
        os.environ["LD_LIBRARY_PATH"] = orig
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)


def install_stop_handlers() -> None:
    """Turn SIGTERM, SIGHUP, SIGBREAK and a closed console window into a clean stop."""

    def stop(signum: int, frame) -> None:
        signal.signal(signum, signal.SIG_IGN)  # one stop is enough
        raise KeyboardInterrupt

    for name in ("SIGTERM", "SIGHUP", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, stop)
    if sys.platform == "win32":
        _install_console_close_handler()


_console_handler: Callable | None = None  # kept alive for the lifetime of the process


def _install_console_close_handler() -> None:  # pragma: no cover - Windows only
    """Windows: on console close/logoff/shutdown, stop the server before Windows kills us."""
    import _thread
    import ctypes
    from ctypes import wintypes

    global _console_handler
    close_events = {2, 5, 6}  # CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT

    @ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)
    def handler(ctrl_type: int) -> bool:
        if ctrl_type in close_events:
            _thread.interrupt_main()
            _stopped.wait(4.0)  # Windows ends the process ~5 s after a close event
            return True
        return False  # Ctrl+C / Ctrl+Break: Python's own handlers (SIGINT, SIGBREAK)

    _console_handler = handler
    ctypes.windll.kernel32.SetConsoleCtrlHandler(handler, True)


def serve(args: argparse.Namespace, path: Path) -> int:
    """Run the clinic app until stopped; returns the exit code."""
    from pneumo.app.runtime.cli import serve_and_report, serve_config

    config = serve_config(
        args, model_path=str(path),
        data_dir=str(Path(args.data_dir).expanduser().resolve()) if args.data_dir else None)
    open_browser = not args.no_browser
    if open_browser:
        _restore_child_env()
    from pneumo.app.config import resolve
    from pneumo.app.runtime.instance import InstanceLock, report_running, stopped_line

    probe = InstanceLock(resolve({"data_dir": config["data_dir"]})["data_dir"])
    if not probe.acquire():  # already running for this data folder: show that one
        return report_running(probe, open_browser=open_browser, lang=config.get("lang"))
    probe.release()  # run_server takes it again (and answers a launch racing this one)
    install_stop_handlers()
    try:
        code = serve_and_report(config, open_browser=open_browser)
    except KeyboardInterrupt:  # stopped before the server was up
        code = 0
    finally:
        _stopped.set()
    if code:
        return code
    print(stopped_line(PROG, config.get("lang")), flush=True)
    return code


def backup(data_dir: str | None, out: str) -> int:
    """Copy the data folder's history database to ``out``; 0 done, 2 failed."""
    import sqlite3

    from pneumo.app.config import resolve
    from pneumo.app.history.backup import backup_history
    from pneumo.app.history.schema import DB_NAME

    path = resolve({"data_dir": data_dir})["data_dir"] / DB_NAME
    try:
        counts = backup_history(path, out)
    except (sqlite3.DatabaseError, OSError) as exc:
        print(f"error: cannot back up {path}: {exc}", file=sys.stderr)
        return 2
    print(f"backup of {path}: {out} ({', '.join(f'{t} {n}' for t, n in counts.items())})")
    return 0


def in_app_bundle() -> bool:
    """True for the macOS app (``pneumo-edge.app/Contents/MacOS/pneumo-edge``)."""
    return (is_frozen() and sys.platform == "darwin"
            and ".app/Contents/MacOS/" in Path(sys.executable).as_posix())


def _is_null_device(stream: TextIO) -> bool:
    """Whether a stream writes to the null device (what launchd gives an app's output)."""
    try:
        st, null = os.fstat(stream.fileno()), os.stat(os.devnull)
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (null.st_dev, null.st_ino)


def has_console() -> bool:
    """Whether printed output can be read by someone.

    False for the windowed Windows program (sys.stdout/sys.stderr are None) and for the
    macOS app started from the Finder or at login (its output goes to the null device).
    """
    if sys.stdout is None or sys.stderr is None:
        return False
    return not (in_app_bundle() and _is_null_device(sys.stdout)
                and _is_null_device(sys.stderr))


def default_log_file(data_dir: str | None) -> Path:
    """``<data folder>/logs/pneumo-edge.log`` for --data-dir (or the default data folder)."""
    from pneumo.app.config import resolve

    return resolve({"data_dir": data_dir})["data_dir"] / "logs" / LOG_NAME


def log_file_path(args: argparse.Namespace, *, console: bool) -> Path | None:
    """Where the log goes: --log-file, $PNEUMO_LOG_FILE, the data folder's log without a
    console; None: the console (stderr)."""
    given = args.log_file or os.environ.get(LOG_FILE_ENV)
    if given:
        return Path(given).expanduser().resolve()
    if console:
        return None
    return default_log_file(args.data_dir)


def start_file_log(path: Path, early: io.StringIO | None = None, *, console: bool) -> Path | None:
    """Send the log and print output to ``path``; replay what was printed before (``early``).

    Returns the log file, or None when it cannot be written: then the log goes to the
    console if there is one, else nowhere (the app still runs).
    """
    from pneumo.app.runtime.logs import setup_file_logging, setup_logging

    if console:
        print(f"{PROG}: log in {path}", flush=True)
    try:
        setup_file_logging(path)
    except OSError as exc:
        if console:
            print(f"warning: cannot write the log file {path}: {exc}", file=sys.stderr)
            setup_logging()
        else:
            sys.stdout = sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
        return None
    if early is not None:
        for line in early.getvalue().splitlines():
            if line.strip():
                print(line)
    return path


def _post(url: str, token: str | None, timeout: float = 10.0) -> int:
    """POST an empty JSON body to url; the HTTP status (0: nothing answers there)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def _still_running(folder: Path, pid: object) -> bool:
    """Whether the app that had ``pid`` still holds the data folder."""
    from pneumo.app.runtime.instance import InstanceLock

    lock = InstanceLock(folder)
    info = lock.info()
    if info.get("pid") == pid and info.get("running") is False:
        return False
    if lock.acquire():  # nobody holds the folder any more
        lock.release()
        return False
    return True


def stop_running(data_dir: str | None, token: str | None = None,
                 timeout: float = STOP_WAIT_S) -> int:
    """Stop the app serving a data folder and wait until it has exited; 0 stopped (or was
    not running), 1 it could not be stopped.

    Asks the app itself (POST /api/v1/shutdown at the address in instance.json): a clean
    stop on every OS. An app that does not know that request (404/405) gets SIGTERM on
    Linux and macOS; on Windows it must be stopped from its page or its window.
    """
    from pneumo.app.config import resolve
    from pneumo.app.runtime.instance import LOCK_NAME, InstanceLock

    folder = resolve({"data_dir": data_dir})["data_dir"]
    lock = InstanceLock(folder)
    if not (folder / LOCK_NAME).exists() or lock.acquire():
        lock.release()
        print(f"{PROG} is not running for the data folder {folder}", flush=True)
        return 0
    info = lock.wait_for_running(timeout=min(timeout, 10.0)) or lock.info()
    url, pid = info.get("url"), info.get("pid")
    status = _post(url + STOP_PATH, token) if url else 0
    if 200 <= status < 300:
        print(f"asked the app at {url} (process {pid}) to stop", flush=True)
    elif status in (401, 403):
        print(f"error: the app at {url} refused to stop (HTTP {status}); "
              "give its access token with --token", file=sys.stderr)
        return 1
    elif sys.platform != "win32" and isinstance(pid, int) and pid > 0:
        os.kill(pid, signal.SIGTERM)  # an app without the stop request: a clean stop too
        print(f"sent SIGTERM to the app (process {pid})", flush=True)
    else:
        print(f"error: the app at {url or '?'} (process {pid}) cannot be stopped from here "
              f"(HTTP {status}); use the page's Stop button or close its window",
              file=sys.stderr)
        return 1
    deadline = time.monotonic() + timeout
    while _still_running(folder, pid):
        if time.monotonic() > deadline:
            print(f"error: the app (process {pid}) is still running after {timeout:.0f} s",
                  file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"{PROG} stopped (data folder {folder})", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the executable."""
    console = has_console()
    early = None
    if console:
        for stream in (sys.stdout, sys.stderr):  # a console may not be UTF-8 (Windows)
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="replace", line_buffering=True)
    else:  # keep what is printed until the log file is known (a usage error, --help)
        early = io.StringIO()
        sys.stdout = sys.stderr = early
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        if early is not None:
            start_file_log(default_log_file(None), early, console=False)
        raise
    log_path = log_file_path(args, console=console)
    if log_path is not None:  # the one logging setup of the executable: a file ...
        start_file_log(log_path, early, console=console)
    else:  # ... or the console: server logs to stderr
        from pneumo.app.runtime.logs import setup_logging

        setup_logging()
    if args.stop:
        return stop_running(args.data_dir, args.token)
    if args.install_model:
        from pneumo.app.updates.cli import install_and_report

        return install_and_report(args.install_model, data_dir=args.data_dir,
                                  trusted_key=args.trusted_key,
                                  allow_unsigned=args.allow_unsigned)
    if args.backup:
        return backup(args.data_dir, args.backup)
    from pneumo.app.runtime.autostart import handle_autostart

    done = handle_autostart(args)
    if done is not None:
        return done
    from pneumo.app.updates.model_store import ModelStoreError

    try:
        path = model_path(args.model, args.data_dir)
    except ModelStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.version:
        return print_version(path)
    if not path.is_file():
        print(f"error: model file not found: {path}", file=sys.stderr)
        return 2
    if args.self_test:
        return self_test(path)
    try:
        return serve(args, path)
    except KeyboardInterrupt:  # interrupted while starting up
        return 130


if __name__ == "__main__":
    if not is_frozen():  # unfrozen runs from a checkout: make the project importable
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
