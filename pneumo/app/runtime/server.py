"""Serve the clinic app with Waitress (never Flask's development server).

`run_server` is what `pneumo serve` and the packaged executable call. The lines it prints
(start-up, stop) are in the server's language (``lang`` setting or PNEUMO_LANG, else English);
the first one always ends with the page's URL, which scripts read.
It stops on Ctrl+C (KeyboardInterrupt), on SIGTERM (what service managers and `kill` send)
or when the page's "Stop the app" asks (`Stopper`): all leave through the same clean-up
(DICOM receiver, retention, Waitress, history, the data folder's lock).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from http.cookies import CookieError, SimpleCookie
from typing import TextIO

from pneumo.app import i18n
from pneumo.app.config import is_loopback, resolve
from pneumo.app.history.schema import DB_NAME
from pneumo.app.i18n import N_, _
from pneumo.app.runtime.instance import InstanceLock, choose_port, open_in_browser, report_running
from pneumo.app.web.state import SHUTDOWN_HOOK, get_state

log = logging.getLogger(__name__)

QUEUE_WARNING_EVERY_S = 60.0
"""At most one "Task queue depth" warning this often, and only when the queue stays high."""

STOP_DELAY_S = 0.5
"""A stop asked by the page waits this long, so that its 202 answer is sent first."""


class Stopper:
    """Stops the Waitress loop of `_serve` from any thread (the page's "Stop the app")."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.by_signal = False
        self._servers: list = []

    def attach(self, server) -> None:
        """The Waitress server (or MultiSocketServer) to wake up when a stop is asked."""
        from waitress.server import BaseWSGIServer

        self._servers = [srv for srv in [server, *list(getattr(server, "map", {}).values())]
                         if isinstance(srv, BaseWSGIServer)]

    def request(self, delay: float = STOP_DELAY_S) -> None:
        """Stop the server after ``delay`` seconds (returns at once)."""
        timer = threading.Timer(delay, self._stop)
        timer.daemon = True
        timer.start()

    def _stop(self) -> None:
        self.requested.set()
        for srv in self._servers:
            try:
                srv.pull_trigger()  # wakes the loop now rather than at its next timeout
            except OSError:
                pass

    def run(self, server) -> None:
        """Waitress's loop (same map, timeout and poll setting) until a stop is asked.

        Unlike ``server.run()``, a KeyboardInterrupt reaches the caller.
        """
        smap = server.map if hasattr(server, "map") else server._map
        adj = server.adj
        while smap and not self.requested.is_set():
            server.asyncore.loop(timeout=adj.asyncore_loop_timeout, map=smap,
                                 use_poll=adj.asyncore_use_poll, count=1)


def _cookie_lang(header: str) -> str | None:
    """The ``lang`` cookie in a Cookie header, if any."""
    try:
        morsel = SimpleCookie(header).get(i18n.COOKIE)
    except CookieError:
        return None
    return morsel.value if morsel else None


class QueueDepthFilter(logging.Filter):
    """Waitress warns "Task queue depth is N" on every request that waits for a free thread.

    A short wait under a few clients is normal: only a depth of at least ``high`` (requests
    waiting beyond a whole pool of busy threads) is logged, at most once per ``every_s``.
    """

    def __init__(self, high: int, every_s: float = QUEUE_WARNING_EVERY_S):
        super().__init__()
        self.high = max(1, int(high))
        self.every_s = every_s
        self._last = -float("inf")
        self._skipped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record only when the queue is high and no warning was logged lately."""
        if not str(record.msg).startswith("Task queue depth"):
            return True
        depth = record.args[0] if isinstance(record.args, tuple) and record.args else 0
        now = time.monotonic()
        if not isinstance(depth, int) or depth < self.high or now - self._last < self.every_s:
            self._skipped += 1
            return False
        record.msg = ("Task queue depth is %d (requests waiting for a worker thread; "
                      "%d shorter waits not logged); consider more --threads")
        record.args = (depth, self._skipped)
        self._last, self._skipped = now, 0
        return True


def _json_error_channel(max_upload_bytes: int, lang: str | None = None):
    """A Waitress channel class whose own error answers (400, 413, 431...) are our JSON.

    Their message is in the request's language as the app would choose it (``lang`` cookie,
    the server's ``lang`` setting, Accept-Language); the code stays English.
    """
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    from pneumo.app.web.errors import TOO_LARGE, too_large_params

    codes = {400: "bad_request", 413: "file_too_large",
             431: "request_header_fields_too_large", 500: "internal_error"}
    setting = lang or os.environ.get(i18n.LANG_ENV)

    class JsonErrorTask(ErrorTask):
        """Waitress's error answer in the documented shape {"error": {"code", "message"}}."""

        def execute(self) -> None:
            e = self.request.error
            headers = getattr(self.request, "headers", None) or {}
            chosen = i18n.best_language(headers.get("ACCEPT_LANGUAGE"),
                                        _cookie_lang(headers.get("COOKIE", "")),
                                        setting)
            if e.code == 413:
                message = i18n.in_language(chosen, TOO_LARGE,
                                           **too_large_params(max_upload_bytes))
            elif e.code >= 500:
                message = i18n.in_language(chosen, N_("Something went wrong on the server."))
            else:
                message = i18n.in_language(
                    chosen, N_("The request could not be read: %(detail)s."), detail=e.body)
            code = codes.get(e.code, "bad_request")
            body = json.dumps({"error": {"code": code, "message": message}}).encode()
            self.status = f"{e.code} {e.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(HTTPChannel):
        """HTTPChannel answering its own errors in JSON."""

        error_task_class = JsonErrorTask

    return JsonErrorChannel


def model_line(model, source: dict | None) -> str:
    """The start-up line's model: name, version, where it came from, short sha256.

    Only stable places are named (never the executable's temporary unpack folder): the
    bundled model is "bundled with the app", an installed one its date, a --model file its path.
    In the console's language inside ``i18n.console``.
    """
    from pneumo.app.updates.model_store import source_text

    if (source or {}).get("source") == "file":
        where = _("file %(path)s", path=model.path)
    else:
        where = source_text(source)
    return f"{model.name} {model.version} ({where}, sha256 {model.sha256[:12]})"


def prepare_config(config: dict) -> dict:
    """Resolve settings; off-loopback binding gets a generated token if none was given."""
    cfg = resolve(config)
    if not is_loopback(cfg["host"]) and not cfg["token"]:
        cfg["token"] = secrets.token_urlsafe(24)
    return cfg


def _url(host: str, port: int) -> str:
    """The http URL for a bind address."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def run_server(config: dict, *, open_browser: bool = False, out: TextIO | None = None,
               ready: threading.Event | None = None) -> int:
    """Create the app and serve it with Waitress until stopped; returns an exit code.

    One app per data folder: when another one already serves it, its address is opened in
    the browser (``open_browser``) or printed, and 0 is returned (pneumo.app.runtime.instance).
    Stopped by Ctrl+C (KeyboardInterrupt) or the page's "Stop the app"; either way the
    receiver, Waitress and the history are closed and the data folder's lock is released.
    """
    out = out or sys.stdout
    cfg = prepare_config(config)
    lock = InstanceLock(cfg["data_dir"])
    if not lock.acquire():
        return report_running(lock, open_browser=open_browser, out=out, lang=cfg["lang"])
    try:
        return _serve(cfg, generated=cfg["token"] if not config.get("token") else None,
                      lock=lock, open_browser=open_browser, out=out, ready=ready)
    finally:
        lock.release()
        log.info("stopped; the data folder %s is free", cfg["data_dir"])


def _banner(cfg: dict, *, url: str, open_url: str, state, receiver, generated: str | None,
            pin: bool) -> list[str]:
    """The start-up lines, in the current language; the first one ends with the URL."""
    lines = [_("pneumo clinic app listening on %(url)s", url=url),
             _("model: %(model)s",
               model=model_line(state.model, state.config.get("model_source")))]
    if cfg["clinic_name"]:
        lines.append(_("clinic: %(name)s", name=cfg["clinic_name"]))
    history = str(cfg["data_dir"] / DB_NAME)
    lines.append(_("history: %(path)s (uploaded images kept)", path=history)
                 if cfg["keep_images"] else _("history: %(path)s", path=history))
    if receiver is not None:
        line = _("DICOM receiver: AE title %(aet)s on %(address)s", aet=receiver.ae_title,
                 address=f"{receiver.host}:{receiver.port}")
        if cfg["dicom_allowed_aets"]:
            line += _(", callers %(callers)s", callers=", ".join(cfg["dicom_allowed_aets"]))
        else:
            line += _(", any caller")
        if cfg["dicom_send"]:
            line += _("; results sent to %(destination)s", destination=cfg["dicom_send"])
        lines.append(line)
    if cfg["retain_days"]:
        lines.append(_("retention: records older than %(days)s days are deleted (at start and "
                       "every hour)", days=cfg["retain_days"]))
    if pin:
        lines.append(_("access PIN required: open the page as /?pin=YOUR-PIN once"))
    if cfg["token"]:
        if generated:
            lines.append(_("access token (generated): %(token)s", token=cfg["token"]))
        lines.append(_("open: %(url)s", url=open_url))
    if cfg["allow_shutdown"]:
        lines.append(_("press %(keys)s to stop, or use \u201cStop the app\u201d on the page",
                       keys="Ctrl+C"))
    else:
        lines.append(_("press %(keys)s to stop", keys="Ctrl+C"))
    return lines


def _stop_on_sigterm(stopper: Stopper):
    """SIGTERM stops like Ctrl+C (main thread only); the handler it replaced, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_sigterm(signum, frame) -> None:
        stopper.by_signal = True
        stopper.request(0.0)

    return signal.signal(signal.SIGTERM, on_sigterm)


def _serve(cfg: dict, *, generated: str | None, lock: InstanceLock, open_browser: bool,
           out: TextIO, ready: threading.Event | None) -> int:
    """run_server once this process holds the data folder's lock."""
    from waitress.server import BaseWSGIServer, create_server

    from pneumo.app.web.app import LARGE_UPLOAD_BYTES, create_app

    with i18n.console(cfg["lang"]):
        port = choose_port(cfg["host"], cfg["port"], out, remembered=lock.remembered_port())
    app = create_app(cfg)
    server = create_server(
        app, host=cfg["host"], port=port, threads=cfg["threads"], ident="pneumo",
        # Bodies up to twice the upload limit reach the app (which answers a JSON 413).
        # Bodies under 8 MB stay in memory; larger ones wait in Waitress's anonymous
        # (already unlinked) temporary file until the app has a large-upload slot, so
        # several maximum-size uploads at once do not add up in memory.
        max_request_body_size=2 * cfg["max_upload_bytes"] + 1024 * 1024,
        inbuf_overflow=LARGE_UPLOAD_BYTES,
        clear_untrusted_proxy_headers=True,
    )
    channel = _json_error_channel(cfg["max_upload_bytes"], cfg["lang"])
    for srv in [server, *list(getattr(server, "map", {}).values())]:
        if isinstance(srv, BaseWSGIServer):  # one per listening socket
            srv.channel_class = channel
    queue_log = logging.getLogger("waitress.queue")
    queue_log.filters = [f for f in queue_log.filters if not isinstance(f, QueueDepthFilter)]
    queue_log.addFilter(QueueDepthFilter(high=cfg["threads"]))
    stopper = Stopper()
    stopper.attach(server)
    if cfg["allow_shutdown"]:
        app.extensions[SHUTDOWN_HOOK] = stopper.request
    port = int(server.effective_port) if hasattr(server, "effective_port") else port
    url = _url(cfg["host"], port)
    open_url = url + (f"?token={cfg['token']}" if cfg["token"] else "")
    state = get_state(app)
    receiver = None
    if cfg["dicom_port"] is not None:
        from pneumo.app.dicom.receiver import DicomReceiver

        receiver = DicomReceiver(state, cfg)
        try:
            receiver.start()
        except BaseException:
            server.close()
            state.history.close()
            raise
    retention = None
    if cfg["retain_days"]:
        from pneumo.app.history.backup import RetentionThread

        retention = RetentionThread(state.history, cfg["retain_days"])
        retention.start()
    with i18n.console(cfg["lang"]):
        for line in _banner(cfg, url=url, open_url=open_url, state=state, receiver=receiver,
                            generated=generated, pin="pneumo_pin" in app.extensions):
            print(line, file=out)
        out.flush()
        lock.publish(url=url, port=port, token=bool(cfg["token"]), lang=i18n.current())
        if open_browser:  # the timer's thread prints in the same language
            threading.Timer(0.5, contextvars.copy_context().run,
                            args=(open_in_browser, open_url, out)).start()
    previous = _stop_on_sigterm(stopper)
    if ready is not None:
        ready.set()
    try:
        stopper.run(server)
        if stopper.requested.is_set():
            log.info("stop asked %s", "by SIGTERM" if stopper.by_signal else "from the page")
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        with i18n.console(cfg["lang"]):
            print(_("stopping"), file=out, flush=True)
        if retention is not None:
            retention.stop()
            retention.join(timeout=30)
        if receiver is not None:
            receiver.stop()
        server.task_dispatcher.shutdown()
        server.close()
        state.history.close()
    return 0
