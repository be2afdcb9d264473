"""Request gatekeeping: Host check, access token, CSRF / origin checks, security headers.

- Bound to loopback without a token, only loopback Host names are served (stops DNS
  rebinding pages from reading the history).
- With a token, every request must carry it: ``Authorization: Bearer``, ``X-Access-Token``,
  or the HttpOnly cookie set by visiting ``/?token=...`` once.
- Opt-in on loopback (``--require-pin``, for a shared computer): every request must carry
  the access PIN (``X-Access-PIN``) or the HttpOnly cookie set by visiting ``/?pin=...``
  once (``/healthz`` excepted); five wrong PINs in a row pause PIN checks for 30 s.
- Unsafe requests (POST, ...) from browsers must be same-origin: ``Sec-Fetch-Site``, and
  ``Origin`` (or, without one, ``Referer``) must match this server's scheme, host and port.
  When they carry one of our cookies they must also send the per-session CSRF token in
  ``X-CSRF-Token``. Cookie-less API clients (curl, scripts) need
  no CSRF token: without cookies there is no ambient authority to forge.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, redirect, request, session

from pneumo.app.config import LOOPBACK_NAMES
from pneumo.app.i18n import N_, _
from pneumo.app.web.errors import ApiError
from pneumo.app.web.state import get_state

TOKEN_COOKIE = "pneumo_access"
SESSION_COOKIE = "pneumo_session"
CSRF_HEADER = "X-CSRF-Token"
PIN_HEADER = "X-Access-PIN"
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
    cfg = get_state().config
    token = cfg["token"]
    if token is None:
        trusted = tuple(cfg["trusted_hosts"] or LOOPBACK_NAMES)
        if not _host_ok(trusted):
            raise ApiError(400, "bad_host", N_("This server only answers requests addressed to "
                                               "localhost."))
        guard = current_app.extensions.get("pneumo_pin")
        if guard is not None and request.path != "/healthz":  # liveness: no patient data
            resp = _check_pin(guard)
            if resp is not None:
                return resp
    else:
        url_token = request.args.get("token") if request.method == "GET" else None
        if url_token is not None and request.path == "/":
            if not _same(url_token, token):
                raise ApiError(401, "bad_token", N_("The access token is wrong."))
            resp = redirect("/", code=303)
            resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
            return resp
        presented = _presented_token()
        if presented is None:
            raise ApiError(401, "token_required", N_("An access token is required: open the "
                                                     "link printed by the server, or send "
                                                     "'Authorization: Bearer <token>'."))
        if not _same(presented, token):
            raise ApiError(401, "bad_token", N_("The access token is wrong."))
    if request.method not in SAFE_METHODS:
        _check_unsafe()
    return None


def _origin_of(url: str) -> tuple[str, str] | None:
    """(scheme, host[:port]) of an Origin/Referer value, default ports dropped; None if opaque."""
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        return None
    scheme = parts.scheme.lower()
    netloc = parts.netloc.lower().rsplit("@", 1)[-1]
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default and netloc.endswith(default):
        netloc = netloc[: -len(default)]
    return scheme, netloc


def _same_origin(url: str) -> bool:
    """Whether an Origin/Referer names this server: same scheme, host and port."""
    return _origin_of(url) == _origin_of(f"{request.scheme}://{request.host}")


def _pin_ok(guard, pin: str) -> bool:
    """Check a presented PIN (429 while paused after repeated wrong PINs)."""
    wait = guard.locked_for()
    if wait > 0:
        raise ApiError(429, "too_many_pin_attempts", _("Too many wrong PINs. Wait %(seconds)s "
                                                       "seconds and try again.",
                                                       seconds=f"{wait:.0f}"))
    return guard.check(pin)


def _check_pin(guard) -> Response | None:
    """--require-pin: `/?pin=...` once (sets the HttpOnly cookie), or `X-Access-PIN`."""
    wrong = ApiError(401, "bad_pin", N_("The access PIN is wrong."))
    url_pin = request.args.get("pin") if request.method == "GET" else None
    if url_pin is not None and request.path == "/":
        if not _pin_ok(guard, url_pin):
            raise wrong
        resp = redirect("/", code=303)
        resp.set_cookie(TOKEN_COOKIE, guard.session_secret, httponly=True, samesite="Strict",
                        path="/")
        return resp
    presented = _presented_token()
    if presented is not None and _same(presented, guard.session_secret):
        return None
    header = request.headers.get(PIN_HEADER)
    if header is not None:
        if _pin_ok(guard, header):
            return None
        raise wrong
    raise ApiError(401, "pin_required", _("This computer's clinic app asks for its access PIN: "
                                          "open the page as /?pin=YOUR-PIN once, or send the "
                                          "header '%(header)s'.", header=PIN_HEADER))


def _check_unsafe() -> None:
    """Refuse cross-site writes; require the CSRF token when our cookies are present."""
    refused = ApiError(403, "cross_site_request", N_("Requests from other sites are refused."))
    site = request.headers.get("Sec-Fetch-Site")
    if site and site not in ("same-origin", "none"):
        raise refused
    origin = request.headers.get("Origin")
    referer = request.headers.get("Referer")
    if origin is not None:
        if not _same_origin(origin):  # "null" and other opaque origins too
            raise refused
    elif referer is not None and not _same_origin(referer):
        raise refused  # no Origin: the Referer must then name this server
    if SESSION_COOKIE in request.cookies or TOKEN_COOKIE in request.cookies:
        sent = request.headers.get(CSRF_HEADER, "")
        expected = session.get("csrf", "")
        if not sent or not expected or not _same(sent, expected):
            raise ApiError(403, "csrf_failed", N_("The page has expired. Reload the page and "
                                                  "try again."))


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
