"""The opt-in access PIN (`--require-pin`) for loopback use on a shared computer.

Only a salted scrypt hash (hashlib, OpenSSL's maintained KDF) is stored, in ``access-pin``
in the data folder (this user only). The PIN is set on the first `--require-pin` start, from
$PNEUMO_PIN or typed at the prompt; delete that file to set a new one.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import logging
import os
import secrets
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

PIN_FILE = "access-pin"
PIN_ENV = "PNEUMO_PIN"
MIN_PIN, MAX_PIN = 4, 64
_N, _R, _P = 2**14, 8, 1  # scrypt cost: about 50 ms a guess


def hash_pin(pin: str) -> str:
    """'scrypt$n$r$p$salt$hash' for a PIN (random salt)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_pin(pin: str, stored: str) -> bool:
    """Whether a PIN matches a stored hash (constant-time compare)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(pin.encode()[:256], salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def check_new_pin(pin: str) -> str:
    """The PIN if acceptable, else ValueError."""
    if not MIN_PIN <= len(pin) <= MAX_PIN or pin != pin.strip():
        raise ValueError(f"the access PIN must have {MIN_PIN} to {MAX_PIN} characters "
                         "(no leading or trailing spaces)")
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


def load_or_set(data_dir: Path) -> str:
    """The stored PIN hash of this data folder; set (and stored) now if there is none."""
    path = Path(data_dir) / PIN_FILE
    if path.is_file():
        return path.read_text(encoding="ascii").strip()
    stored = hash_pin(_ask())
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(stored + "\n")
    log.info("access PIN set (hash stored in %s)", path)
    return stored


class PinGuard:
    """Checks presented PINs; after ``max_failures`` wrong ones in a row, waits ``lock_s``."""

    def __init__(self, stored: str, *, max_failures: int = 5, lock_s: float = 30.0):
        self.stored = stored
        self.max_failures = max_failures
        self.lock_s = lock_s
        self.session_secret = secrets.token_urlsafe(32)  # the cookie value after a right PIN
        self._failures = 0
        self._locked_until = 0.0
        self._lock = threading.Lock()

    def locked_for(self) -> float:
        """Seconds until PINs are checked again (0 when not locked)."""
        return max(0.0, self._locked_until - time.monotonic())

    def check(self, pin: str) -> bool:
        """Whether the PIN is right (counts failures; call only when not locked)."""
        ok = verify_pin(pin, self.stored)
        with self._lock:
            if ok:
                self._failures = 0
            else:
                self._failures += 1
                if self._failures >= self.max_failures:
                    self._failures = 0
                    self._locked_until = time.monotonic() + self.lock_s
                    log.warning("%d wrong access PINs: PIN checks paused for %.0f s",
                                self.max_failures, self.lock_s)
        return ok
