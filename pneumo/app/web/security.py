"""Request gatekeeping: Host check, access token, CSRF / origin checks, security headers.

- Bound to loopback without a token, only loopback Host names are served (stops DNS
  rebinding pages from reading the history).
- With a token, every request must carry it: ``Authorization: Bearer``, ``X-Access-Token``,
  or the HttpOnly cookie set by visiting ``/?token=...`` once.
- Opt-in on loopback (``--require-pin``, for a shared computer): every request must carry
  the access PIN (``X-Access-PIN``) or the HttpOnly cookie set by visiting ``/?pin=...``
  once (``/healthz`` excepted). A PIN sent from another site (``Sec-Fetch-Site``, ``Origin``
  or ``Referer``: the same rule as for unsafe requests) is refused (403 ``cross_site_pin``)
  and not counted; repeated wrong PINs pause PIN checks, growing to at most 30 s (429 with
  Retry-After; pneumo.app.web.pin says how).
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

from flask import (
    Flask,
    Response,
    abort,
    after_this_request,
    current_app,
    redirect,
    request,
    session,
)
from markupsafe import escape

from pneumo.app import i18n
from pneumo.app.config import LOOPBACK_NAMES
from pneumo.app.i18n import N_, _
from pneumo.app.web.errors import ApiError, error_response
from pneumo.app.web.pin import MIN_PIN, PIN_FILE, SHORT_PIN_NOTICE, PinGuard, PinPaused
from pneumo.app.web.state import get_state

TOKEN_COOKIE = "pneumo_access"
SESSION_COOKIE = "pneumo_session"
CSRF_HEADER = "X-CSRF-Token"
PIN_HEADER = "X-Access-PIN"
PIN_NOTICE_HEADER = "X-Access-PIN-Notice"
"""On a right PIN that is too short (legacy): SHORT_PIN_NOTICE, in English."""
CROSS_SITE_PIN = N_("The PIN was not checked because the request came from another website or "
                    "program. Open the clinic app by typing its address or using its shortcut, "
                    "then enter the PIN there.")
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


def _pin_ok(guard: PinGuard, pin: str) -> bool:
    """Check a presented PIN: 403 from another site and 429 while paused (neither counted)."""
    if _cross_site():
        raise ApiError(403, "cross_site_pin", CROSS_SITE_PIN)
    try:
        ok = guard.check(pin)
    except PinPaused as paused:
        resp = error_response(429, "too_many_pin_attempts",
                              _("Too many wrong PINs. Wait %(seconds)s seconds and try again.",
                                seconds=str(paused.retry_after)),
                              retry_after_s=paused.retry_after)
        resp.headers["Retry-After"] = str(paused.retry_after)
        abort(resp)
    if ok and guard.short_pin:
        after_this_request(_short_pin_header)
    return ok


def _short_pin_header(resp: Response) -> Response:
    """The notice header on the answer to a right but too short (legacy) PIN."""
    with i18n.english():
        resp.headers[PIN_NOTICE_HEADER] = _(SHORT_PIN_NOTICE, min=MIN_PIN, file=PIN_FILE)
    return resp


def _short_pin_page() -> Response:
    """The answer to `/?pin=` with a right but too short PIN: the notice, then a link in."""
    lang = i18n.current()
    body = (f'<!doctype html><html lang="{escape(lang)}" dir="{escape(i18n.direction())}">'
            f'<meta charset="utf-8"><title>pneumo</title>'
            f'<p>{escape(_(SHORT_PIN_NOTICE, min=MIN_PIN, file=PIN_FILE))}</p>'
            f'<p><a href="/">{escape(_("Continue to the app"))}</a></p></html>')
    return Response(body, status=200, mimetype="text/html")


def _check_pin(guard: PinGuard) -> Response | None:
    """--require-pin: `/?pin=...` once (sets the HttpOnly cookie), or `X-Access-PIN`."""
    wrong = ApiError(401, "bad_pin", N_("The access PIN is wrong."))
    url_pin = request.args.get("pin") if request.method == "GET" else None
    if url_pin is not None and request.path == "/":
        if not _pin_ok(guard, url_pin):
            raise wrong
        resp = _short_pin_page() if guard.short_pin else redirect("/", code=303)
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


def _cross_site() -> bool:
    """Whether the browser says this request comes from another site (or origin).

    ``Sec-Fetch-Site`` other than same-origin/none (same-site too: on loopback every other
    port of this computer is the same site), else an ``Origin`` (or, without one, a
    ``Referer``) that is not this server's scheme, host and port. Clients that send none of
    them (curl, scripts) are not browsers on another site.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    if origin is not None:
        return not _same_origin(origin)  # "null" and other opaque origins too
    referer = request.headers.get("Referer")
    return referer is not None and not _same_origin(referer)


def _check_unsafe() -> None:
    """Refuse cross-site writes; require the CSRF token when our cookies are present."""
    if _cross_site():
        raise ApiError(403, "cross_site_request", N_("Requests from other sites are refused."))
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
