"""Serve the clinic app with Waitress (never Flask's development server).

`run_server` is what `pneumo serve` and the packaged executable call.
"""

from __future__ import annotations

import logging
import secrets
import sys
import threading
import webbrowser
from typing import TextIO

from edge_app.config import is_loopback, resolve
from edge_app.history import DB_NAME


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
    """Create the app and serve it with Waitress until interrupted; returns an exit code."""
    from waitress.server import create_server

    from edge_app.app import create_app

    out = out or sys.stdout
    cfg = prepare_config(config)
    generated = cfg["token"] if not config.get("token") else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(cfg)
    server = create_server(
        app, host=cfg["host"], port=cfg["port"], threads=cfg["threads"], ident="pneumo",
        # Bodies up to twice the upload limit reach the app (which answers a JSON 413);
        # legitimate uploads stay in memory instead of Waitress's temporary files.
        max_request_body_size=2 * cfg["max_upload_bytes"] + 1024 * 1024,
        inbuf_overflow=cfg["max_upload_bytes"] + 1024 * 1024,
        clear_untrusted_proxy_headers=True,
    )
    port = server.effective_port if hasattr(server, "effective_port") else cfg["port"]
    url = _url(cfg["host"], port)
    open_url = url + (f"?token={cfg['token']}" if cfg["token"] else "")
    state = app.extensions["pneumo"]
    print(f"pneumo clinic app listening on {url}", file=out)
    print(f"model: {state.model.name} {state.model.version} ({state.model.path})", file=out)
    if cfg["clinic_name"]:
        print(f"clinic: {cfg['clinic_name']}", file=out)
    print(f"history: {cfg['data_dir'] / DB_NAME}"
          + (" (uploaded images kept)" if cfg["keep_images"] else ""), file=out)
    if cfg["token"]:
        if generated:
            print(f"access token (generated): {cfg['token']}", file=out)
        print(f"open: {open_url}", file=out)
    print("press Ctrl+C to stop", file=out)
    out.flush()
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(open_url,)).start()
    if ready is not None:
        ready.set()
    try:
        server.run()
    except KeyboardInterrupt:
        print("stopping", file=out)
    finally:
        server.close()
        state.history.close()
    return 0
