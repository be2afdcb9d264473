"""The opt-in access PIN (`--require-pin`) for loopback use on a shared computer.

Only a salted scrypt hash (hashlib, OpenSSL's maintained KDF) is stored, in ``access-pin``
in the data folder (this user only). The PIN is set on the first `--require-pin` start, from
$PNEUMO_PIN or typed at the prompt. To set a new PIN: stop the app, delete that file, and
start the app again with $PNEUMO_PIN set (or from a console, to type it).

Guessing: the first ``pin_free_failures`` (4) wrong PINs in a row are answered at once; each
further one pauses all PIN checks, 1 s after the 5th, then doubling (2, 4, 8, 16 s) up to
``pin_max_delay_s`` (30 s), never more. While paused, a PIN is not checked (429 with
Retry-After) and not counted; after the pause the right PIN works again, so the clinician
waits at most 30 s after the last wrong PIN. A right PIN resets the count. After a wrong
PIN, checks run one at a time, so concurrent requests get no extra guesses. A guesser thus
gets one guess per 30 s: with the minimum of 8 characters (worst case: digits only) trying
all 10^8 PINs takes 10^8 * 30 s, about 95 years (half that on average). Note: a program on
this computer that sends a wrong PIN the moment each pause ends can keep the pause going
(as it could flood the server anyway); browsers already let in by their cookie keep working.

Stored format: ``scrypt$n$r$p$salt$hash$min=8``, the last field being the minimum length in
force when the PIN was set. Files written before it existed have no such field (legacy):
they keep working, so no clinic is locked out by an upgrade. At the first right PIN the app
learns its length: a long enough PIN is re-hashed with the field (silently); a shorter one
keeps working, but is logged as a WARNING and each right entry of it answers a notice asking
for a longer PIN (see ``SHORT_PIN_NOTICE``).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import logging
import math
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pneumo.app.i18n import N_, _

log = logging.getLogger(__name__)

PIN_FILE = "access-pin"
PIN_ENV = "PNEUMO_PIN"
MIN_PIN, MAX_PIN = 8, 64
"""PIN length limits (characters). 8 digits at one guess per 30 s: about 95 years for all."""
FREE_FAILURES = 4
"""Wrong PINs in a row answered at once, before the first pause."""
FIRST_DELAY_S = 1.0
"""The first pause (seconds); it doubles with each further wrong PIN."""
MAX_DELAY_S = 30.0
"""The longest pause (seconds); MIN_PIN is chosen for this rate."""
_N, _R, _P = 2**14, 8, 1  # scrypt cost: about 50 ms a guess
_POLICY = "min="

SHORT_PIN_NOTICE = N_("This access PIN is too short to be safe (fewer than %(min)s characters). "
                      "Please set a longer one: stop the app, delete the file %(file)s in its "
                      "data folder, then start the app again and choose a new PIN of at least "
                      "%(min)s characters.")
"""Shown after a right legacy PIN shorter than MIN_PIN (``min``, ``file`` filled in)."""


def hash_pin(pin: str) -> str:
    """'scrypt$n$r$p$salt$hash$min=N' for a new PIN (random salt); ValueError if too short."""
    check_new_pin(pin)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return (f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"
            f"${_POLICY}{MIN_PIN}")


def stored_minimum(stored: str) -> int:
    """The minimum PIN length in force when a hash was written (0: legacy, not recorded)."""
    parts = stored.strip().split("$")
    if len(parts) == 7 and parts[6].startswith(_POLICY) and parts[6][len(_POLICY):].isdigit():
        return int(parts[6][len(_POLICY):])
    return 0


def verify_pin(pin: str, stored: str) -> bool:
    """Whether a PIN matches a stored hash, legacy or current (constant-time compare)."""
    try:
        parts = stored.strip().split("$")
        if len(parts) == 7 and stored_minimum(stored):
            parts = parts[:6]
        kind, n, r, p, salt, digest = parts
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(pin.encode()[:256], salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def check_new_pin(pin: str) -> str:
    """The PIN if acceptable as a new PIN, else ValueError (with a message for the clinician)."""
    if not MIN_PIN <= len(pin) <= MAX_PIN or pin != pin.strip():
        raise ValueError(_("the access PIN must have %(min)s to %(max)s characters, with no "
                           "spaces at the start or end (a long PIN keeps guessers out)",
                           min=MIN_PIN, max=MAX_PIN))
    return pin


def _ask() -> str:
    """The new PIN from $PNEUMO_PIN or typed twice at the console; ValueError if neither."""
    env = os.environ.get(PIN_ENV)
    if env:
        return check_new_pin(env)
    if not sys.stdin or not sys.stdin.isatty():
        raise ValueError(f"--require-pin: no PIN is set yet; set ${PIN_ENV} or start once "
                         "from a console to type one")
    first = check_new_pin(getpass.getpass("new access PIN: "))
    if getpass.getpass("the same PIN again: ") != first:
        raise ValueError("the two PINs differ")
    return first


def _write(path: Path, stored: str) -> None:
    """Store a hash in the PIN file (this user only), replacing any old one at once."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(stored + "\n")
    os.replace(tmp, path)


def load_or_set(data_dir: Path) -> str:
    """The stored PIN hash of this data folder; set (and stored) now if there is none."""
    path = Path(data_dir) / PIN_FILE
    if path.is_file():
        stored = path.read_text(encoding="ascii").strip()
        if stored_minimum(stored) < MIN_PIN:
            log.info("the access PIN in %s was set before the %d-character minimum; its "
                     "length is checked at the first right PIN", path, MIN_PIN)
        return stored
    stored = hash_pin(_ask())
    _write(path, stored)
    log.info("access PIN set (hash stored in %s)", path)
    return stored


def delay_after(failures: int, *, free: int = FREE_FAILURES, first: float = FIRST_DELAY_S,
                cap: float = MAX_DELAY_S) -> float:
    """Seconds PIN checks pause after this many wrong PINs in a row (0, then doubling, capped)."""
    if failures <= free:
        return 0.0
    return min(cap, first * 2.0 ** min(failures - free - 1, 60))


class PinPaused(Exception):
    """PIN checks are paused for ``seconds`` more after repeated wrong PINs."""

    def __init__(self, seconds: float):
        super().__init__(f"PIN checks paused for {seconds:.1f} s")
        self.seconds = seconds

    @property
    def retry_after(self) -> int:
        """Whole seconds for the Retry-After header (at least 1)."""
        return max(1, math.ceil(self.seconds))


class PinGuard:
    """Checks presented PINs; wrong ones in a row pause checks (growing, capped; thread-safe)."""

    def __init__(self, stored: str, *, path: Path | None = None,
                 free_failures: int = FREE_FAILURES, delay_s: float = FIRST_DELAY_S,
                 max_delay_s: float = MAX_DELAY_S,
                 clock: Callable[[], float] = time.monotonic):
        if free_failures < 0 or not 0 < delay_s <= max_delay_s:
            raise ValueError("PIN pauses: need pin_free_failures >= 0 and "
                             "0 < pin_delay_s <= pin_max_delay_s")
        self.stored = stored
        self.path = path  # the file to re-hash a legacy PIN into (None: keep it in memory)
        self.free_failures = free_failures
        self.delay_s = delay_s
        self.max_delay_s = max_delay_s
        self.session_secret = secrets.token_urlsafe(32)  # the cookie value after a right PIN
        self.short_pin = False  # a right PIN was a legacy one shorter than MIN_PIN
        self._clock = clock
        self._minimum = stored_minimum(stored)
        self._failures = 0
        self._paused_until = 0.0
        self._lock = threading.Lock()  # the counters
        self._one_at_a_time = threading.Lock()  # checks after a wrong PIN

    @classmethod
    def from_config(cls, cfg: dict) -> PinGuard:
        """The guard of an app's settings: ``pin_hash``, else the data folder's PIN file."""
        path = None if cfg["pin_hash"] else Path(cfg["data_dir"]) / PIN_FILE
        stored = cfg["pin_hash"] or load_or_set(cfg["data_dir"])
        return cls(stored, path=path, free_failures=int(cfg["pin_free_failures"]),
                   delay_s=float(cfg["pin_delay_s"]), max_delay_s=float(cfg["pin_max_delay_s"]))

    @property
    def failures(self) -> int:
        """Wrong PINs in a row so far."""
        return self._failures

    def paused_for(self) -> float:
        """Seconds until PINs are checked again (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    def _raise_if_paused(self) -> None:
        wait = self.paused_for()
        if wait > 0:
            raise PinPaused(wait)

    def check(self, pin: str) -> bool:
        """Whether the PIN is right (counted); PinPaused, neither checked nor counted, if paused."""
        with self._lock:
            self._raise_if_paused()
            careful = self._failures > 0
        if not careful:
            return self._verify(pin)
        with self._one_at_a_time:  # concurrent guesses wait, then see the new pause
            with self._lock:
                self._raise_if_paused()
            return self._verify(pin)

    def _verify(self, pin: str) -> bool:
        ok = verify_pin(pin, self.stored)
        with self._lock:
            if ok:
                if self._failures:
                    log.info("right access PIN after %d wrong ones", self._failures)
                self._failures = 0
                self._paused_until = 0.0
            else:
                self._failures += 1
                delay = delay_after(self._failures, free=self.free_failures,
                                    first=self.delay_s, cap=self.max_delay_s)
                if delay:
                    self._paused_until = self._clock() + delay
                    log.warning("%d wrong access PINs in a row: PIN checks paused for %.0f s",
                                self._failures, delay)
            if ok and self._minimum < MIN_PIN:
                self._legacy(pin)
        return ok

    def _legacy(self, pin: str) -> None:
        """A right PIN of a legacy hash: re-hash it if long enough, else flag it as short."""
        try:
            stored = hash_pin(pin)
        except ValueError:
            if not self.short_pin:
                log.warning("the access PIN is shorter than %d characters: set a longer one "
                            "(stop the app, delete %s, start it again)", MIN_PIN,
                            self.path or PIN_FILE)
            self.short_pin = True
            return
        if self.path is not None:
            try:
                _write(self.path, stored)
            except OSError as exc:
                log.warning("could not re-hash the access PIN into %s: %s", self.path, exc)
        self.stored = stored
        self._minimum = MIN_PIN
        log.info("access PIN re-hashed with the %d-character minimum recorded", MIN_PIN)
