"""One app per data folder, on a port that stays the same across restarts.

The running app holds an OS lock on ``<data_dir>/app.lock`` (released by the OS when the
process ends, even killed) and describes itself in ``<data_dir>/instance.json`` (pid, URL,
port). A second `pneumo serve` or `pneumo-edge` with the same data folder finds the lock
taken, opens the browser on the running app (or prints its address) and exits 0. The
file stays after a stop: its port is used again at the next start when it is free, so
bookmarks keep working. What these functions print is in the current language (the server's,
inside ``i18n.console``; a second launch uses the running app's when it names none).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import time
import webbrowser
from pathlib import Path
from typing import TextIO

from pneumo.app import bounded_json, i18n
from pneumo.app.i18n import _

log = logging.getLogger(__name__)

LOCK_NAME = "app.lock"
INSTANCE_NAME = "instance.json"
WAIT_FOR_RUNNING_S = 30.0
"""How long a second launch waits for a starting first one to publish its address."""


def port_is_free(host: str, port: int) -> bool:
    """Whether (host, port) can be bound now (same socket options as Waitress)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return True  # let the server report the bad address
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if os.name != "nt":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1), 10048, 10013):
                return False
            return True  # another problem (e.g. a foreign address): the server reports it
    return True


def choose_port(host: str, requested: int | None, out: TextIO | None = None, *,
                remembered: int | None = None) -> int:
    """The port to listen on: the requested one; else the remembered, the default or a free one."""
    from pneumo.app.config import DEFAULT_PORT

    out = out or sys.stdout
    if requested is not None:
        return int(requested)  # an explicit port (0 = any free) is used as given
    if remembered and port_is_free(host, remembered):
        return remembered
    if port_is_free(host, DEFAULT_PORT):
        if remembered and remembered != DEFAULT_PORT:
            print(_("port %(port)s (used last time) is taken; using %(default)s",
                    port=remembered, default=DEFAULT_PORT), file=out, flush=True)
        return DEFAULT_PORT
    print(_("port %(port)s is already in use (another program?); using a free port instead",
            port=DEFAULT_PORT), file=out, flush=True)
    return 0


def open_in_browser(url: str, out: TextIO | None = None) -> bool:
    """Open url in the default browser; if none can be opened, print where to go instead."""
    try:
        opened = webbrowser.open(url)
    except Exception:  # noqa: BLE001 - a broken browser setup must not stop the app
        log.exception("the browser could not be started")
        opened = False
    if not opened:
        print(_("open %(url)s in your browser", url=url), file=out or sys.stdout, flush=True)
    return opened


class InstanceLock:
    """The data folder's single-instance lock and its instance.json."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.lock_path = self.data_dir / LOCK_NAME
        self.info_path = self.data_dir / INSTANCE_NAME
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock: True if this process is the only app on the folder (or no lock can
        be made: the folder's problem is reported by the history store), False if taken."""
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning("no single-instance lock in %s: %s", self.data_dir, exc)
            return True
        try:
            if sys.platform == "win32":  # pragma: no cover - Windows only
                import msvcrt

                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def info(self) -> dict:
        """The last published instance.json ({} if none or unreadable)."""
        try:
            return bounded_json.load_file(self.info_path)
        except (OSError, ValueError):
            return {}

    def remembered_port(self) -> int | None:
        """The port the app used last time with this folder, if any."""
        try:
            port = int(self.info().get("port"))
        except (TypeError, ValueError):
            return None
        return port if 0 < port < 65536 else None

    def publish(self, *, url: str, port: int, token: bool, lang: str | None = None) -> None:
        """Record the serving address and language (and remember the port)."""
        info = {"pid": os.getpid(), "url": url, "port": int(port), "token": token,
                "running": True, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if lang:
            info["lang"] = lang
        self._write(info)

    def _write(self, info: dict) -> None:
        tmp = self.info_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(info) + "\n")
            os.replace(tmp, self.info_path)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.info_path, exc)

    def release(self) -> None:
        """Mark the app stopped (the port stays remembered) and drop the lock."""
        if self._fd is None:
            return
        info = self.info()
        if info.get("pid") == os.getpid():
            self._write({**info, "running": False})
        os.close(self._fd)  # releases the lock
        self._fd = None

    def wait_for_running(self, timeout: float = WAIT_FOR_RUNNING_S) -> dict | None:
        """The running app's instance.json once it has published its address (None: timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.info()
            if info.get("running") and info.get("pid") != os.getpid() and info.get("url"):
                return info
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)


def report_running(lock: InstanceLock, *, open_browser: bool, out: TextIO | None = None,
                   lang: str | None = None) -> int:
    """A second launch: open (or print) the running app's address; the exit code.

    Printed in ``lang`` (the launch's ``lang`` setting), else the running app's language,
    else PNEUMO_LANG, else English.
    """
    out = out or sys.stdout
    info = lock.wait_for_running()
    with i18n.console(lang or (info or {}).get("lang")):
        if info is None:
            print(_("another pneumo app holds %(path)s but has not said where it listens; try "
                    "again in a minute", path=lock.lock_path), file=out, flush=True)
            return 1
        url = info["url"]
        words = {"folder": lock.data_dir, "url": url, "pid": info["pid"]}
        if info.get("token"):
            line = _("pneumo is already running for the data folder %(folder)s at %(url)s "
                     "(process %(pid)s); the page needs its access token", **words)
        else:
            line = _("pneumo is already running for the data folder %(folder)s at %(url)s "
                     "(process %(pid)s)", **words)
        print(line, file=out, flush=True)
        if open_browser:
            if open_in_browser(url, out):
                print(_("opened %(url)s in your browser", url=url), file=out, flush=True)
        else:
            print(_("open %(url)s in your browser", url=url), file=out, flush=True)
    return 0


def stopped_line(prog: str, lang: str | None = None) -> str:
    """The launcher's last line, "PROG stopped", in the server's language."""
    with i18n.console(lang):
        return _("%(prog)s stopped", prog=prog)
