"""Issue 26, item 5: a PIN that keeps guessers out without locking out the clinician.

Cross-site PIN attempts are refused and never counted, wrong PINs pause checks with a delay
that grows and is capped, new PINs have a minimum length, and legacy shorter PINs keep
working (re-hashed when long enough, a notice when not).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading

import pytest

from pneumo.app.web import pin as pin_mod
from pneumo.app.web.pin import (
    MAX_DELAY_S,
    MIN_PIN,
    PIN_FILE,
    PinGuard,
    PinPaused,
    check_new_pin,
    delay_after,
    hash_pin,
    stored_minimum,
    verify_pin,
)
from pneumo.app.web.security import PIN_HEADER, PIN_NOTICE_HEADER, TOKEN_COOKIE
from pneumo.app.web.state import get_state

RIGHT = "24681357"
WRONG = "11111111"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def legacy_hash(pin: str) -> str:
    """A hash in the format written before the minimum was recorded (six fields)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=pin_mod._N, r=pin_mod._R, p=pin_mod._P,
                            dklen=32)
    b64 = base64.b64encode
    return f"scrypt${pin_mod._N}${pin_mod._R}${pin_mod._P}${b64(salt).decode()}${b64(digest).decode()}"


# --- the rule -------------------------------------------------------------------------------

def test_the_delay_grows_from_the_fifth_wrong_pin_and_is_capped_at_30_s():
    """0 for four wrong PINs, then 1, 2, 4, 8, 16 s, then never more than 30 s."""
    delays = [delay_after(n) for n in range(1, 13)]
    assert delays == [0, 0, 0, 0, 1, 2, 4, 8, 16, 30, 30, 30]
    assert delay_after(10**6) == MAX_DELAY_S == 30.0


def test_the_minimum_length_makes_exhaustion_take_years():
    """8 characters (digits only, the worst case) at one guess per capped pause: ~95 years."""
    assert MIN_PIN == 8
    years = 10**MIN_PIN * MAX_DELAY_S / (365.25 * 86400)
    assert 90 < years < 100
    with pytest.raises(ValueError, match="8 to 64 characters"):
        check_new_pin("2468")
    with pytest.raises(ValueError):
        hash_pin("1234567")
    assert check_new_pin(RIGHT) == RIGHT
    assert stored_minimum(hash_pin(RIGHT)) == MIN_PIN and verify_pin(RIGHT, hash_pin(RIGHT))


def test_a_paused_guard_neither_checks_nor_counts_and_the_right_pin_works_after_the_pause():
    clock = FakeClock()
    guard = PinGuard(hash_pin(RIGHT), clock=clock)
    for _ in range(5):
        assert guard.check(WRONG) is False
    assert guard.failures == 5 and guard.paused_for() == pytest.approx(1.0)
    with pytest.raises(PinPaused) as paused:
        guard.check(RIGHT)  # the right PIN waits too, but is not counted
    assert paused.value.retry_after == 1 and guard.failures == 5
    clock.now += 1.0
    assert guard.check(RIGHT) is True
    assert guard.failures == 0 and guard.paused_for() == 0


def test_a_guesser_gets_one_guess_per_capped_pause_and_the_clinician_waits_at_most_the_cap():
    clock = FakeClock()
    guard = PinGuard(hash_pin(RIGHT), clock=clock)
    for _ in range(40):  # a guesser that tries again the moment each pause ends
        assert guard.check(WRONG) is False
        assert guard.paused_for() <= MAX_DELAY_S
        clock.now += guard.paused_for()
    assert guard.failures == 40
    assert guard.check(WRONG) is False and guard.paused_for() == MAX_DELAY_S
    clock.now += MAX_DELAY_S  # the clinician, at most 30 s after the last wrong PIN
    assert guard.check(RIGHT) is True


def test_concurrent_guesses_after_a_wrong_pin_get_no_extra_tries():
    """Eight threads guessing at once after a wrong PIN: one is checked, seven see the pause."""
    guard = PinGuard(hash_pin(RIGHT), free_failures=1, delay_s=30.0, max_delay_s=30.0)
    assert guard.check(WRONG) is False and guard.paused_for() == 0  # the free one
    results: list[str] = []
    start = threading.Barrier(8)

    def guess() -> None:
        start.wait()
        try:
            results.append("checked" if not guard.check(WRONG) else "right")
        except PinPaused:
            results.append("paused")

    threads = [threading.Thread(target=guess) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["checked"] + ["paused"] * 7
    assert guard.failures == 2


def test_a_legacy_pin_long_enough_is_rehashed_with_the_minimum_at_its_first_right_entry(tmp_path):
    path = tmp_path / PIN_FILE
    path.write_text(legacy_hash(RIGHT) + "\n")
    stored = pin_mod.load_or_set(tmp_path)
    assert stored_minimum(stored) == 0
    guard = PinGuard(stored, path=path)
    assert guard.check(WRONG) is False
    assert stored_minimum(path.read_text()) == 0  # only a right PIN tells its length
    assert guard.check(RIGHT) is True and not guard.short_pin
    assert stored_minimum(path.read_text()) == MIN_PIN
    assert verify_pin(RIGHT, path.read_text().strip())
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_legacy_short_pin_keeps_working_and_is_flagged(tmp_path):
    path = tmp_path / PIN_FILE
    old = legacy_hash("2468")
    path.write_text(old + "\n")
    guard = PinGuard(old, path=path)
    assert guard.check("2468") is True and guard.short_pin
    assert path.read_text().strip() == old  # kept as it was: no clinic locked out by an upgrade


# --- through the app -------------------------------------------------------------------------

@pytest.fixture
def make_pin_client(app_config):
    """A factory of test clients of apps started with require_pin and a given stored hash."""
    from pneumo.app.web.app import create_app

    apps = []

    def make(stored: str, **extra):
        app = create_app({**app_config, "require_pin": True, "pin_hash": stored, **extra})
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        get_state(app).history.close()


def _guard(client) -> PinGuard:
    return client.application.extensions["pneumo_pin"]


CROSS_SITE = [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # another port of this computer
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Referer": "http://evil.example/page"},
]


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_a_cross_site_pin_is_refused_and_not_counted(make_pin_client, headers):
    """Before: a cross-site GET to /?pin= counted as an attempt, so any web page could keep
    the clinician out. After: 403 cross_site_pin, not checked, not counted, no cookie."""
    client = make_pin_client(hash_pin(RIGHT))
    for _ in range(20):
        r = client.get(f"/?pin={WRONG}", headers=headers)
        assert r.status_code == 403 and r.get_json()["error"]["code"] == "cross_site_pin"
        r = client.get("/api/v1/model", headers={PIN_HEADER: WRONG, **headers})
        assert r.status_code == 403
    r = client.get(f"/?pin={RIGHT}", headers=headers)  # the right PIN too: never from outside
    assert r.status_code == 403 and "Set-Cookie" not in r.headers
    assert _guard(client).failures == 0
    assert client.get("/api/v1/model", headers={PIN_HEADER: RIGHT}).status_code == 200


def test_the_pin_typed_in_the_address_bar_or_sent_by_a_script_is_checked(make_pin_client):
    """Sec-Fetch-Site 'none' (typed, a bookmark, the launcher) and no header (curl) work."""
    client = make_pin_client(hash_pin(RIGHT))
    r = client.get(f"/?pin={RIGHT}", headers={"Sec-Fetch-Site": "none"})
    assert r.status_code == 303 and TOKEN_COOKIE in r.headers["Set-Cookie"]
    same = {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"}
    assert client.get("/api/v1/model", headers={PIN_HEADER: RIGHT, **same}).status_code == 200


def test_the_pause_answers_429_with_retry_after_then_the_right_pin_works(make_pin_client):
    client = make_pin_client(hash_pin(RIGHT), pin_delay_s=0.2, pin_max_delay_s=0.2)
    for _ in range(5):
        assert client.get("/api/v1/model", headers={PIN_HEADER: WRONG}).status_code == 401
    r = client.get("/api/v1/model", headers={PIN_HEADER: RIGHT})
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    err = r.get_json()["error"]
    assert err["code"] == "too_many_pin_attempts" and err["retry_after_s"] == 1
    assert "Wait 1 seconds" in err["message"]
    threading.Event().wait(0.25)
    assert client.get("/api/v1/model", headers={PIN_HEADER: RIGHT}).status_code == 200


def test_a_legacy_short_pin_lets_in_with_a_notice(make_pin_client):
    client = make_pin_client(legacy_hash("2468"))
    r = client.get("/api/v1/model", headers={PIN_HEADER: "2468"})
    assert r.status_code == 200
    assert "too short to be safe" in r.headers[PIN_NOTICE_HEADER]
    r = client.get("/?pin=2468")  # the page: the notice, then a link in
    assert r.status_code == 200 and TOKEN_COOKIE in r.headers["Set-Cookie"]
    page = r.get_data(as_text=True)
    assert "too short to be safe" in page and f"at least {MIN_PIN} characters" in page
    assert PIN_FILE in page and 'href="/"' in page
    assert client.get("/api/v1/history").status_code == 200  # the cookie works
