"""Serve the clinic app with Waitress (never Flask's development server).

`run_server` is what `pneumo serve` and the packaged executable call.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import threading
import time
from typing import TextIO

from edge_app.config import is_loopback, resolve
from edge_app.history import DB_NAME
from edge_app.instance import InstanceLock, choose_port, open_in_browser, report_running
from edge_app.state import get_state

log = logging.getLogger(__name__)

QUEUE_WARNING_EVERY_S = 60.0
"""At most one "Task queue depth" warning this often, and only when the queue stays high."""


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


def _json_error_channel(max_upload_bytes: int):
    """A Waitress channel class whose own error answers (400, 413, 431...) are our JSON."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    from edge_app.errors import too_large_message

    codes = {400: "bad_request", 413: "file_too_large",
             431: "request_header_fields_too_large", 500: "internal_error"}

    class JsonErrorTask(ErrorTask):
        """Waitress's error answer in the documented shape {"error": {"code", "message"}}."""

        def execute(self) -> None:
            e = self.request.error
            if e.code == 413:
                message = too_large_message(max_upload_bytes)
            elif e.code >= 500:
                message = "Something went wrong on the server."
            else:
                message = f"The request could not be read: {e.body}."
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
    """
    where = (source or {}).get("text") or "bundled with the app"
    if (source or {}).get("source") == "file":
        where = f"file {model.path}"
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
    """Create the app and serve it with Waitress until interrupted; returns an exit code.

    One app per data folder: when another one already serves it, its address is opened in
    the browser (``open_browser``) or printed, and 0 is returned (edge_app.instance).
    """
    out = out or sys.stdout
    cfg = prepare_config(config)
    lock = InstanceLock(cfg["data_dir"])
    if not lock.acquire():
        return report_running(lock, open_browser=open_browser, out=out)
    try:
        return _serve(cfg, generated=cfg["token"] if not config.get("token") else None,
                      lock=lock, open_browser=open_browser, out=out, ready=ready)
    finally:
        lock.release()


def _serve(cfg: dict, *, generated: str | None, lock: InstanceLock, open_browser: bool,
           out: TextIO, ready: threading.Event | None) -> int:
    """run_server once this process holds the data folder's lock."""
    from waitress.server import BaseWSGIServer, create_server

    from edge_app.app import LARGE_UPLOAD_BYTES, create_app

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
    channel = _json_error_channel(cfg["max_upload_bytes"])
    for srv in [server, *list(getattr(server, "map", {}).values())]:
        if isinstance(srv, BaseWSGIServer):  # one per listening socket
            srv.channel_class = channel
    queue_log = logging.getLogger("waitress.queue")
    queue_log.filters = [f for f in queue_log.filters if not isinstance(f, QueueDepthFilter)]
    queue_log.addFilter(QueueDepthFilter(high=cfg["threads"]))
    port = int(server.effective_port) if hasattr(server, "effective_port") else port
    url = _url(cfg["host"], port)
    open_url = url + (f"?token={cfg['token']}" if cfg["token"] else "")
    state = get_state(app)
    receiver = None
    if cfg["dicom_port"] is not None:
        from edge_app.dicom_receiver import DicomReceiver

        receiver = DicomReceiver(state, cfg)
        try:
            receiver.start()
        except BaseException:
            server.close()
            state.history.close()
            raise
    print(f"pneumo clinic app listening on {url}", file=out)
    print(f"model: {model_line(state.model, state.config.get('model_source'))}", file=out)
    if cfg["clinic_name"]:
        print(f"clinic: {cfg['clinic_name']}", file=out)
    print(f"history: {cfg['data_dir'] / DB_NAME}"
          + (" (uploaded images kept)" if cfg["keep_images"] else ""), file=out)
    if receiver is not None:
        print(f"DICOM receiver: AE title {receiver.ae_title} on {receiver.host}:{receiver.port}"
              + (f", callers {', '.join(cfg['dicom_allowed_aets'])}"
                 if cfg["dicom_allowed_aets"] else ", any caller")
              + (f"; results sent to {cfg['dicom_send']}" if cfg["dicom_send"] else ""),
              file=out)
    retention = None
    if cfg["retain_days"]:
        from edge_app.backup import RetentionThread

        retention = RetentionThread(state.history, cfg["retain_days"])
        retention.start()
        print(f"retention: records older than {cfg['retain_days']} days are deleted "
              "(at start and every hour)", file=out)
    if "pneumo_pin" in app.extensions:
        print("access PIN required: open the page as /?pin=YOUR-PIN once", file=out)
    if cfg["token"]:
        if generated:
            print(f"access token (generated): {cfg['token']}", file=out)
        print(f"open: {open_url}", file=out)
    print("press Ctrl+C to stop", file=out)
    out.flush()
    lock.publish(url=url, port=port, token=bool(cfg["token"]))
    if open_browser:
        threading.Timer(0.5, open_in_browser, args=(open_url, out)).start()
    if ready is not None:
        ready.set()
    try:
        server.run()
    except KeyboardInterrupt:
        print("stopping", file=out)
    finally:
        if retention is not None:
            retention.stop()
            retention.join(timeout=30)
        if receiver is not None:
            receiver.stop()
        server.close()
        state.history.close()
    return 0
