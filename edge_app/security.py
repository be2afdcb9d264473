"""Request gatekeeping: Host check, access token, CSRF / origin checks, security headers.

- Bound to loopback without a token, only loopback Host names are served (stops DNS
  rebinding pages from reading the history).
- With a token, every request must carry it: ``Authorization: Bearer``, ``X-Access-Token``,
  or the HttpOnly cookie set by visiting ``/?token=...`` once.
- Unsafe requests (POST, ...) from browsers must be same-origin (``Origin`` /
  ``Sec-Fetch-Site``), and when they carry one of our cookies they must also send the
  per-session CSRF token in ``X-CSRF-Token``. Cookie-less API clients (curl, scripts) need
  no CSRF token: without cookies there is no ambient authority to forge.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, redirect, request, session

from edge_app.config import LOOPBACK_NAMES
from edge_app.errors import ApiError

TOKEN_COOKIE = "pneumo_access"
SESSION_COOKIE = "pneumo_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'; "
       "object-src 'none'")


def csrf_token() -> str:
    """This browser session's CSRF token (created on first use)."""
    tok = session.get("csrf")
    if not tok:
        tok = secrets.token_urlsafe(32)
        session["csrf"] = tok
    return tok


def _presented_token() -> str | None:
    """The access token sent with this request, if any."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return (request.headers.get("X-Access-Token") or request.cookies.get(TOKEN_COOKIE)
            or None)


def _same(a: str, b: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(a.encode(), b.encode())


def _host_ok(trusted: tuple[str, ...]) -> bool:
    """Whether the Host header names this computer (loopback mode)."""
    host = request.host.lower()
    if host.startswith("["):
        name = host[: host.find("]") + 1]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in trusted


def _check_request() -> Response | None:
    """before_request: Host, token and CSRF checks."""
    cfg = current_app.extensions["pneumo"].config
    token = cfg["token"]
    if token is None:
        trusted = tuple(cfg["trusted_hosts"] or LOOPBACK_NAMES)
        if not _host_ok(trusted):
            raise ApiError(400, "bad_host", "This server only answers requests addressed to "
                                            "localhost.")
    else:
        url_token = request.args.get("token") if request.method == "GET" else None
        if url_token is not None and request.path == "/":
            if not _same(url_token, token):
                raise ApiError(401, "bad_token", "The access token is wrong.")
            resp = redirect("/", code=303)
            resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
            return resp
        presented = _presented_token()
        if presented is None:
            raise ApiError(401, "token_required", "An access token is required: open the link "
                                                  "printed by the server, or send "
                                                  "'Authorization: Bearer <token>'.")
        if not _same(presented, token):
            raise ApiError(401, "bad_token", "The access token is wrong.")
    if request.method not in SAFE_METHODS:
        _check_unsafe()
    return None


def _check_unsafe() -> None:
    """Refuse cross-site writes; require the CSRF token when our cookies are present."""
    site = request.headers.get("Sec-Fetch-Site")
    if site and site not in ("same-origin", "none"):
        raise ApiError(403, "cross_site_request", "Requests from other sites are refused.")
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        o = urlsplit(origin)
        if o.netloc.lower() != request.host.lower():
            raise ApiError(403, "cross_site_request", "Requests from other sites are refused.")
    elif origin == "null":
        raise ApiError(403, "cross_site_request", "Requests from other sites are refused.")
    if SESSION_COOKIE in request.cookies or TOKEN_COOKIE in request.cookies:
        sent = request.headers.get(CSRF_HEADER, "")
        expected = session.get("csrf", "")
        if not sent or not expected or not _same(sent, expected):
            raise ApiError(403, "csrf_failed", "The page has expired. Reload the page and try "
                                               "again.")


def _headers(resp: Response) -> Response:
    """after_request: security headers on every response; no caching outside /static."""
    h = resp.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    h.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if not request.path.startswith("/static/"):
        h["Cache-Control"] = "no-store"
        h["Pragma"] = "no-cache"
    return resp


def init_app(app: Flask) -> None:
    """Install the checks and headers on an app."""
    app.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    app.before_request(_check_request)
    app.after_request(_headers)
