"""The clinic's language: gettext catalogues (babel.support, no Flask), locale formats.

Languages are the folders of ``pneumo/app/translations`` (one ``messages.po`` each, English is
the source). The choice, first match wins: ``?lang=xx`` (remembered in the ``lang`` cookie),
the ``lang`` cookie, the server's ``lang`` setting (or PNEUMO_LANG), the browser's ``Accept-Language``,
English. Outside a request (batch command, DICOM receiver, history) texts stay English, except
inside ``console(lang)``: the lines the server prints at start and stop follow the server's
``lang`` setting (or PNEUMO_LANG). ``english()`` always wins (stored texts and logs).
The ``.mo`` files are compiled from the ``.po`` files on first use when missing or older
(into the package, or a private temporary folder when the package is read-only).

This module imports no Flask, so the pipeline (its words and refusal reasons) runs without a
web server; the web layer (pneumo.app.web.i18n) chooses each request's language and tells
this module through `set_request_language`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from babel import Locale
from babel.numbers import format_decimal, format_percent
from babel.support import LazyProxy, NullTranslations, Translations

log = logging.getLogger(__name__)

TRANSLATIONS = Path(__file__).with_name("translations")
"""One folder per language: ``<lang>/LC_MESSAGES/messages.po`` (and the compiled ``.mo``)."""

DEFAULT = "en"
RTL = frozenset({"ar", "fa", "he", "ur"})
"""Languages written right to left."""

COOKIE = "lang"
LANG_ENV = "PNEUMO_LANG"
"""Environment variable: the page's language for everyone when the ``lang`` setting is unset."""

_english = contextvars.ContextVar("pneumo_english", default=False)
_console: contextvars.ContextVar[tuple[str, NullTranslations] | None] = contextvars.ContextVar(
    "pneumo_console", default=None)
_REQUEST_LANGUAGE: list[Callable[[], str | None]] = []
"""The web layer's "language of the request in progress" (None outside a request)."""


def set_request_language(source: Callable[[], str | None]) -> None:
    """Let the web layer say which language the request in progress speaks."""
    _REQUEST_LANGUAGE[:] = [source]


def request_language() -> str | None:
    """The language of the request in progress, or None outside one."""
    return _REQUEST_LANGUAGE[0]() if _REQUEST_LANGUAGE else None


def languages() -> list[str]:
    """The languages with a catalogue, English first."""
    found = sorted(p.name for p in TRANSLATIONS.iterdir()
                   if (p / "LC_MESSAGES" / "messages.po").is_file()) if TRANSLATIONS.is_dir() else []
    return [DEFAULT, *[x for x in found if x != DEFAULT]]


def language_name(code: str) -> str:
    """A language's own name ("Français")."""
    name = Locale.parse(code).get_display_name(code) or code
    return name[:1].upper() + name[1:]


def compile_catalogues(source: Path = TRANSLATIONS, target: Path | None = None) -> Path:
    """Write each ``messages.mo`` from its ``.po`` when missing or older; returns the folder."""
    # babel.messages (~20 ms to import) only when a catalogue needs compiling: never at the
    # start of the executable, which carries the compiled catalogues alone
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    target = target or source
    for po in sorted(source.glob("*/LC_MESSAGES/messages.po")):
        mo = target / po.relative_to(source).with_suffix(".mo")
        if mo.is_file() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        mo.parent.mkdir(parents=True, exist_ok=True)
        with po.open("rb") as f:
            catalog = read_po(f, locale=po.parent.parent.name)
        tmp = mo.with_suffix(".mo.tmp")
        with tmp.open("wb") as f:
            write_mo(f, catalog)
        tmp.replace(mo)
    return target


def _ready_directory() -> str:
    """The folder Flask-Babel reads compiled catalogues from."""
    try:
        return str(compile_catalogues())
    except OSError:  # installed read-only: compile into a private temporary folder
        log.info("catalogues compiled into a temporary folder (%s is read-only)", TRANSLATIONS)
        return str(compile_catalogues(TRANSLATIONS, Path(tempfile.mkdtemp(prefix="pneumo-i18n-"))))


@functools.lru_cache(maxsize=1)
def _catalogue_directory() -> str:
    """_ready_directory(), once per process (outside Flask-Babel: console lines, Waitress)."""
    return _ready_directory()


@functools.lru_cache(maxsize=32)
def catalogue(lang: str) -> NullTranslations:
    """The compiled catalogue of ``lang`` (English, or an unknown code: texts pass through)."""
    if lang == DEFAULT or lang not in languages():
        return NullTranslations()
    return Translations.load(_catalogue_directory(), [lang])


def base_code(code: str | None) -> str:
    """The language part of a code: "pt_BR", "es-419", " FR " -> "pt", "es", "fr"."""
    return (code or "").strip().lower().replace("_", "-").split("-")[0]


def known(code: str | None) -> str | None:
    """The language code with a catalogue named by ``code`` ("fr", "pt_BR", "es-419"), or None."""
    code = base_code(code)
    return code if code and code in languages() else None


def server_language(lang: str | None = None) -> str:
    """The server's own language: the ``lang`` setting, else PNEUMO_LANG, else English."""
    return known(lang or os.environ.get(LANG_ENV)) or DEFAULT


def best_language(accept_language: str | None, *chosen: str | None) -> str:
    """The first known of ``chosen`` (cookie, setting), else Accept-Language's best, else English.

    For answers made outside Flask (Waitress's own errors).
    """
    for code in chosen:
        if found := known(code):
            return found
    from werkzeug.datastructures import LanguageAccept
    from werkzeug.http import parse_accept_header

    best = parse_accept_header(accept_language or "", LanguageAccept).best_match(languages())
    return best or DEFAULT


def in_language(lang: str, text: str, **params: object) -> str:
    """``text`` (a message id) in ``lang``, ``%(name)s`` filled; for texts made outside Flask."""
    text = text if _english.get() else catalogue(known(lang) or DEFAULT).gettext(text)
    return text % params if params else text


@contextlib.contextmanager
def console(lang: str | None = None) -> Iterator[str]:
    """Texts made outside a request inside are in the server's language (its console lines).

    ``lang``: the server's ``lang`` setting (None: PNEUMO_LANG, else English); yields the code
    used. ``english()`` still wins, and requests keep their own language.
    """
    code = server_language(lang)
    token = _console.set((code, catalogue(code)) if code != DEFAULT else None)
    try:
        yield code
    finally:
        _console.reset(token)


def _console_language() -> tuple[str, NullTranslations] | None:
    """The console's (language, catalogue) when texts made now should use it, else None."""
    if _english.get() or request_language() is not None:
        return None
    return _console.get()


def current() -> str:
    """The language code in use now ("en" outside a request, unless inside ``console()``)."""
    if _english.get():
        return DEFAULT
    lang = request_language()
    if lang is not None:
        return lang
    chosen = _console_language()
    return chosen[0] if chosen else DEFAULT


def direction() -> str:
    """"rtl" for right-to-left languages, else "ltr"."""
    return "rtl" if current() in RTL else "ltr"


@contextlib.contextmanager
def english() -> Iterator[None]:
    """Texts made inside stay English (what is stored in the history and logs)."""
    token = _english.set(True)
    try:
        yield
    finally:
        _english.reset(token)


def _(text: str, **params: object) -> str:
    """Translate ``text`` (a message id) into the request's language; ``%(name)s`` filled.

    Outside a request: English, or the server's language inside ``console()``.
    """
    lang = current()
    if lang != DEFAULT:
        text = catalogue(lang).gettext(text)
    return text % params if params else text


def lazy(text: str, **params: object) -> LazyProxy:
    """A translation made when the text is used (for module constants)."""
    return LazyProxy(_, text, enable_cache=False, **params)


def N_(text: str) -> str:  # noqa: N802 - the gettext convention
    """Mark ``text`` for extraction; translated later where it is shown."""
    return text


def translate(text: str, params: dict | None = None) -> str:
    """A stored English text in the request's language when the catalogue has it."""
    return _(text, **(params or {}))


def percent(fraction: float, digits: int = 0) -> str:
    """A fraction as a percentage in the request's language ("12 %" in French)."""
    loc = Locale.parse(current())
    pattern = loc.percent_formats[None].pattern.split(";")[0]
    if digits:
        pattern = pattern.replace("0", "0." + "0" * digits, 1) if "." not in pattern else pattern
    return format_percent(fraction, pattern, locale=loc)


def number(value: float, digits: int = 0) -> str:
    """A number in the request's language."""
    fmt = "#,##0" if digits == 0 else "#,##0." + "0" * digits
    return format_decimal(value, fmt, locale=current())
