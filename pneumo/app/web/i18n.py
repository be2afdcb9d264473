"""The web layer's side of the languages: each request's choice and Flask-Babel for templates.

The choice, first match wins: ``?lang=xx`` (remembered in the ``lang`` cookie), the ``lang``
cookie, the server's ``lang`` setting (or PNEUMO_LANG), the browser's ``Accept-Language``,
English. The words themselves come from pneumo.app.i18n (no Flask), which this module tells
the request's language.
"""

from __future__ import annotations

import os

from flask import Flask, Response, current_app, has_request_context, request
from flask_babel import Babel, get_locale

from pneumo.app import i18n
from pneumo.app.i18n import (
    COOKIE,
    DEFAULT,
    LANG_ENV,
    _ready_directory,
    current,
    direction,
    language_name,
    languages,
)


def _valid(code: str | None) -> str | None:
    code = i18n.base_code(code)
    return code if code in current_app.extensions["pneumo_languages"] else None


def select_locale() -> str:
    """The language of this request (query, cookie, server setting, browser, English)."""
    if not has_request_context():
        return DEFAULT
    for candidate in (request.args.get("lang"), request.cookies.get(COOKIE),
                      current_app.extensions.get("pneumo_lang")):
        if found := _valid(candidate):
            return found
    best = request.accept_languages.best_match(current_app.extensions["pneumo_languages"])
    return best or DEFAULT


def request_language() -> str | None:
    """The language of the request in progress (None outside a request of a pneumo app)."""
    if not has_request_context() or "babel" not in current_app.extensions:
        return None
    loc = get_locale()
    return loc.language if loc else DEFAULT


def init_app(app: Flask, lang: str | None = None) -> None:
    """Set up Flask-Babel, the language choice and the ``lang`` cookie."""
    app.extensions["pneumo_languages"] = languages()
    app.extensions["pneumo_lang"] = lang or os.environ.get(LANG_ENV) or None
    app.config["BABEL_DEFAULT_LOCALE"] = DEFAULT
    Babel(app, locale_selector=select_locale, default_translation_directories=_ready_directory())
    i18n.set_request_language(request_language)

    @app.context_processor
    def _language_context() -> dict:
        return {"lang": current(), "lang_dir": direction(),
                "lang_choices": [(c, language_name(c))
                                 for c in current_app.extensions["pneumo_languages"]]}

    @app.after_request
    def _remember_language(resp: Response) -> Response:
        """``?lang=xx`` is remembered for the next pages (and the printed report)."""
        chosen = _valid(request.args.get("lang"))
        if chosen and request.cookies.get(COOKIE) != chosen:
            resp.set_cookie(COOKIE, chosen, max_age=365 * 86400, samesite="Strict",
                            httponly=True)
        resp.headers.add("Vary", "Accept-Language")
        resp.headers.add("Vary", "Cookie")
        return resp
