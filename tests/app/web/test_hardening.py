"""Issue 14: client input and local trouble get a clear 4xx or start-up message, not a 500.

Each test names the case it guards (before -> after in the docstring).
"""

from __future__ import annotations

import io
import logging
import socket
import sqlite3
import subprocess
import sys
import threading

import pytest
from apptools import REPO, XRAY_NORMAL, encode, http, multipart, post_image, rewrite_model
from PIL import Image

from pneumo.app.config import DEFAULT_PORT, DEFAULTS, clean_text
from pneumo.app.history.faults import StorageError, StorageFull
from pneumo.app.history.schema import DB_NAME
from pneumo.app.history.store import HistoryStore
from pneumo.app.web.state import get_state

FAR_DATES = [("to", "9999-12-31"), ("from", "0001-01-01T00:00:00+14:00"),
             ("to", "9999-12-31T23:59:59-14:00"), ("from", "9999-12-31T23:59:59-14:00")]


def _form(**fields):
    """A predict form with the NORMAL fixture (Flask test client shape)."""
    return {"image": (io.BytesIO(XRAY_NORMAL.read_bytes()), "x.jpeg"), **fields}


# --- dates at the ends of the calendar --------------------------------------------------------

@pytest.mark.parametrize("route", ["/api/v1/history", "/api/v1/history.csv"])
@pytest.mark.parametrize("name,value", FAR_DATES)
def test_far_history_dates_are_clamped_not_500(client, route, name, value):
    """Before: 500 OverflowError. After: 200 (the bound is clamped to the calendar's end)."""
    assert client.post("/api/v1/predict", data=_form()).status_code == 200
    r = client.get(route, query_string={name: value})
    assert r.status_code == 200, r.get_data(as_text=True)
    if route.endswith("history"):
        expected = 0 if (name, value) == ("from", "9999-12-31T23:59:59-14:00") else 1
        assert r.get_json()["total"] == expected


def test_bad_history_date_is_a_400(client):
    """A date that is not a date stays a 400 bad_date."""
    r = client.get("/api/v1/history?to=2025-13-45")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_date"


# --- text fields --------------------------------------------------------------------------------

def test_clean_text_drops_bidi_and_zero_width():
    """U+202E, U+200B, U+FEFF, controls: removed or made a space; one rule for every field."""
    assert clean_text("AB\u202eC\u200bD\ufeff") == "ABCD"
    assert clean_text(" a\tb\u2028c\u00a0d\x00 ") == "a b c d"


def test_patient_ref_and_file_name_lose_bidi_controls(client):
    """Before: U+202E / U+200B kept in the answer, history and CSV. After: stripped."""
    form = _form(patient_ref="P\u202eQ\u200b-7")
    form["image"] = (io.BytesIO(XRAY_NORMAL.read_bytes()), "a\u202egpj.exe\u200b.jpeg")
    r = client.post("/api/v1/predict", data=form)
    assert r.status_code == 200
    assert r.get_json()["patient_ref"] == "PQ-7"
    assert r.get_json()["file_name"] == "agpj.exe.jpeg"
    csv_text = client.get("/api/v1/history.csv").get_data(as_text=True)
    assert "PQ-7" in csv_text and "\u202e" not in csv_text and "\u200b" not in csv_text


def test_clinic_name_follows_the_same_rule(app_config):
    """The clinic name shown on the page and the report uses the same rule."""
    from pneumo.app.config import resolve

    assert resolve({**app_config, "clinic_name": "Clinic\u202e \u200bB"})["clinic_name"] == \
        "Clinic B"


# --- disk full ----------------------------------------------------------------------------------

def test_disk_full_is_a_507_and_recovers(client, app, monkeypatch):
    """Before: 500 internal_error. After: 507 storage_full naming disk space; then 200 again."""
    store = get_state(app).history

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "_insert", full)
    r = client.post("/api/v1/predict", data=_form())
    assert r.status_code == 507
    err = r.get_json()["error"]
    assert err["code"] == "storage_full" and "disk is full" in err["message"]
    assert client.get("/api/v1/history").status_code == 200  # reads still work
    monkeypatch.undo()  # space is back
    assert client.post("/api/v1/predict", data=_form()).status_code == 200


def test_disk_full_on_a_real_sqlite_error_code(tmp_path):
    """SQLITE_FULL from SQLite itself (max_page_count reached) is a StorageFull."""
    store = HistoryStore(tmp_path / DB_NAME, heatmap_keep=5)
    try:
        conn = store._conn()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StorageFull):
            store.add({"sha256": "x", "label": "NORMAL", "probability": 0.1, "threshold": 0.5,
                       "mode": "balanced", "model_version": "t"}, heatmap=b"\0" * 200_000)
    finally:
        store.close()


# --- form limits ----------------------------------------------------------------------------

def test_form_limits_have_their_own_codes(client, app):
    """Before: 413 file_too_large '... smaller than 30 MB'. After: the limit that was hit."""
    parts = app.config["MAX_FORM_PARTS"]
    many = {f"f{i}": "x" for i in range(parts + 5)}
    r = client.post("/api/v1/predict", data=_form(**many))
    assert r.status_code == 413
    assert r.get_json()["error"]["code"] == "too_many_form_parts"
    assert "30 MB" not in r.get_json()["error"]["message"]
    long = "x" * (app.config["MAX_FORM_MEMORY_SIZE"] + 10)
    r = client.post("/api/v1/predict", data=_form(patient_ref=long))
    assert r.status_code == 413
    assert r.get_json()["error"]["code"] == "form_field_too_large"
    big = io.BytesIO(b"\xff\xd8\xff" + b"\0" * (31 * 1024 * 1024))
    r = client.post("/api/v1/predict", data={"image": (big, "x.jpeg")})
    assert r.status_code == 413 and r.get_json()["error"]["code"] == "file_too_large"


# --- Origin / Referer ---------------------------------------------------------------------------

@pytest.mark.parametrize("headers,status", [
    ({"Origin": "https://localhost"}, 403),  # right host, wrong scheme
    ({"Origin": "http://localhost:8080"}, 403),  # right host, wrong port
    ({"Origin": "http://localhost"}, 200),
    ({"Origin": "http://localhost:80"}, 200),  # default port written out
    ({"Referer": "http://evil.example/page"}, 403),  # Referer only, other site
    ({"Referer": "https://localhost/"}, 403),  # Referer only, other scheme
    ({"Referer": "http://localhost/"}, 200),
    ({}, 200),  # scripts (curl) send neither
])
def test_origin_and_referer_checked_with_scheme(client, headers, status):
    """Before: scheme ignored, Referer-only POSTs accepted. After: same scheme+host+port."""
    r = client.post("/api/v1/predict", data=_form(), headers=headers)
    assert r.status_code == status, r.get_data(as_text=True)
    if status == 403:
        assert r.get_json()["error"]["code"] == "cross_site_request"


# --- one source for the defaults ----------------------------------------------------------------

def test_one_source_for_defaults(model):
    """Before: 50 MP in the app, 80 MP for batch/self-test; 8765 written three times."""
    from installer import entry
    from pneumo.app import config
    from pneumo.app.pipeline.predictor import Predictor
    from pneumo.app.runtime.cli import build_parser

    assert DEFAULTS["max_pixels"] == config.DEFAULT_MAX_PIXELS == Predictor(model).max_pixels
    assert DEFAULTS["port"] == DEFAULT_PORT
    assert build_parser().parse_args(["serve"]).port is None  # -> remembered, DEFAULT_PORT or free
    assert entry.build_parser().parse_args([]).port is None  # -> DEFAULT_PORT or a free one


def test_batch_refuses_what_the_server_refuses(client, model, tmp_path):
    """Before: `pneumo predict` accepted a 60 MP image the server refused. After: both refuse."""
    from pneumo.app.pipeline.files import predict_file
    from pneumo.app.pipeline.predictor import Predictor

    path = tmp_path / "huge.png"
    path.write_bytes(encode(Image.new("L", (8000, 7500)), "PNG", compress_level=1))
    r = client.post("/api/v1/predict", data={"image": (io.BytesIO(path.read_bytes()), "h.png")})
    assert r.status_code == 413 and r.get_json()["error"]["code"] == "image_too_large"
    rec = predict_file(Predictor(model), path, "balanced")
    assert rec["status"] == "error" and rec["error"]["code"] == "image_too_large"


# --- self-test ------------------------------------------------------------------------------

def test_self_test_fails_on_a_wrong_label(test_model_path, tmp_path, capsys):
    """Before: a note and exit 0 when the NORMAL sample came back PNEUMONIA. After: exit 1."""
    from installer import entry

    assert entry.self_test(test_model_path) == 0
    capsys.readouterr()
    wrong = rewrite_model(test_model_path, tmp_path / "wrong.onnx",
                          thresholds={"balanced": 0.0, "screening": 0.0})
    assert entry.self_test(wrong) == 1
    out = capsys.readouterr().out
    assert "self-test FAILED" in out and "calls the NORMAL sample PNEUMONIA" in out


# --- the history database and the data folder at start -------------------------------------

def _history_with_records(path) -> None:
    """A real history with a few records."""
    store = HistoryStore(path)
    for i in range(30):
        store.add({"sha256": f"{i:064d}", "label": "NORMAL", "probability": 0.1,
                   "threshold": 0.5, "mode": "balanced", "model_version": "t",
                   "message": "m" * 2000})
    store.close()


def _damaged_files(folder):
    """(name, path) of a garbage, a truncated and a foreign-schema history file."""
    out = []
    garbage = folder / "garbage" / DB_NAME
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"this is not a database\n" * 300)
    out.append(("garbage", garbage))
    truncated = folder / "truncated" / DB_NAME
    truncated.parent.mkdir()
    _history_with_records(truncated)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    out.append(("truncated", truncated))
    foreign = folder / "foreign" / DB_NAME
    foreign.parent.mkdir()
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE predictions (name TEXT, score REAL)")
    conn.execute("INSERT INTO predictions VALUES ('a', 1.0)")
    conn.commit()
    conn.close()
    out.append(("foreign", foreign))
    return out


def test_damaged_history_is_refused_untouched(tmp_path):
    """A damaged or foreign database: StorageError naming the file and the fix; bytes unchanged."""
    for name, path in _damaged_files(tmp_path):
        before = path.read_bytes()
        with pytest.raises(StorageError) as err:
            HistoryStore(path)
        assert str(path) in str(err.value) and "Move it aside" in str(err.value), name
        assert path.read_bytes() == before, name
        assert not path.with_name(DB_NAME + "-wal").exists(), name


def test_unusable_data_folder_is_named(tmp_path, monkeypatch):
    """A data folder that is a file, or read-only: StorageError about the folder."""
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="data folder .*afile.* a file is in the way"):
        HistoryStore(blocker / DB_NAME)
    ro = tmp_path / "ro"
    ro.mkdir()
    import pneumo.app.history.store as history

    monkeypatch.setattr(history.os, "access", lambda *a, **k: False)  # root ignores chmod
    with pytest.raises(StorageError, match="data folder .*ro is read-only"):
        HistoryStore(ro / DB_NAME)


def _serve(test_model_path, data_dir) -> subprocess.CompletedProcess:
    """`python -m pneumo.app serve` on a free port with this data folder (expected to exit)."""
    cmd = [sys.executable, "-m", "pneumo.app", "serve", "--host", "127.0.0.1", "--port", "0",
           "--model", str(test_model_path), "--data-dir", str(data_dir)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_server_start_with_damaged_history_or_bad_folder(test_model_path, tmp_path):
    """Before: exit 1 with a traceback / 'cannot listen on 127.0.0.1:PORT'. After: exit 2, a
    message naming the file or folder and what to do."""
    damaged = _damaged_files(tmp_path)
    name, path = damaged[0]
    run = _serve(test_model_path, path.parent)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and str(path) in run.stderr
    assert "Move it aside" in run.stderr
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    run = _serve(test_model_path, blocker)
    assert run.returncode == 2, run.stderr
    assert "cannot listen" not in run.stderr and "data folder" in run.stderr


# --- Waitress's own answers, and the log under load --------------------------------------------

def _raw(url: str, request: bytes) -> tuple[int, dict, bytes]:
    """Send raw bytes, read the whole answer: (status, headers, body)."""
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        try:
            s.sendall(request)
        except OSError:
            pass  # the server may answer and close before reading everything
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except OSError:
                break
            if not b:
                break
            chunks.append(b)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.slow
def test_waitress_errors_are_json_and_no_queue_warning_per_request(live_server):
    """Before: text/plain 400/413 from Waitress; one 'Task queue depth' line per request under
    8 clients. After: the documented JSON; at most one queue line."""
    import json

    status, headers, body = _raw(live_server.url, b"GET / HTTP/1.1\r\nHost: localhost\r\n"
                                                  b"Content-Length: x\r\n\r\n")
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "bad_request"
    too_big = 64 * 1024 * 1024
    status, headers, body = _raw(
        live_server.url, b"POST /api/v1/predict HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        + f"Content-Length: {too_big}\r\n\r\n".encode() + b"\0" * 1024)
    assert status == 413 and headers["content-type"] == "application/json"
    err = json.loads(body)["error"]
    assert err["code"] == "file_too_large" and "30 MB" in err["message"]

    def client_loop():
        for _ in range(40):
            assert http("GET", live_server.url + "api/v1/model").status == 200

    threads = [threading.Thread(target=client_loop) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert http("GET", live_server.url + "healthz").status == 200
    assert sum("Task queue depth" in line for line in live_server.lines) <= 1


def test_queue_depth_filter_logs_only_high_depth_rarely():
    """Short waits are not logged; a high queue once per interval, with the count skipped."""
    from pneumo.app.runtime.server import QueueDepthFilter

    f = QueueDepthFilter(high=4, every_s=3600)

    def rec(depth):
        return logging.LogRecord("waitress.queue", logging.WARNING, __file__, 1,
                                 "Task queue depth is %d", (depth,), None)

    assert not any(f.filter(rec(d)) for d in (1, 2, 3, 1, 3))
    first = rec(9)
    assert f.filter(first) and "5 shorter waits" in first.getMessage()
    assert not f.filter(rec(12))
    other = logging.LogRecord("waitress.queue", logging.WARNING, __file__, 1, "other", (), None)
    assert f.filter(other)


def test_multipart_helper_roundtrip_sanity(live_server):
    """The live server still answers an ordinary upload after the JSON error channel swap."""
    r = post_image(live_server.url, XRAY_NORMAL.read_bytes(), fields={"patient_ref": "Z\u200b1"})
    assert r.status == 200 and r.json()["patient_ref"] == "Z1"
    body, ctype = multipart({"f": "x"}, {})
    r = http("POST", live_server.url + "api/v1/predict", body=body,
             headers={"Content-Type": ctype})
    assert r.status == 400 and r.json()["error"]["code"] == "missing_image"


# --- opt-in access PIN ------------------------------------------------------------------------

PIN = "24681357"


@pytest.fixture
def pin_client(app_config):
    """A test client of an app started with require_pin (PIN 24681357)."""
    from pneumo.app.web.app import create_app
    from pneumo.app.web.pin import hash_pin

    app = create_app({**app_config, "require_pin": True, "pin_hash": hash_pin(PIN)})
    yield app.test_client()
    get_state(app).history.close()


def test_history_open_by_default(client):
    """Without --require-pin nothing changes: loopback requests need no PIN."""
    assert client.get("/api/v1/history").status_code == 200


def test_require_pin_guards_every_request(pin_client):
    """Before: any local user reads the history. After (opt-in): the PIN or its cookie."""
    from pneumo.app.web.security import PIN_HEADER, TOKEN_COOKIE

    r = pin_client.get("/api/v1/history")
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "pin_required"
    r = pin_client.get("/api/v1/history", headers={PIN_HEADER: "11111111"})
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "bad_pin"
    assert pin_client.get("/api/v1/history", headers={PIN_HEADER: PIN}).status_code == 200
    r = pin_client.get(f"/?pin={PIN}")  # the token's cookie flow
    assert r.status_code == 303 and TOKEN_COOKIE in r.headers["Set-Cookie"]
    assert PIN not in r.headers["Set-Cookie"]
    assert pin_client.get("/api/v1/history").status_code == 200


def test_wrong_pins_pause_checks(pin_client):
    """Four wrong PINs are answered at once; the fifth pauses checks (429 + Retry-After), and
    during the pause the right PIN is not checked either (nor counted)."""
    from pneumo.app.web.security import PIN_HEADER

    for _ in range(5):
        r = pin_client.get("/api/v1/model", headers={PIN_HEADER: "00000000"})
        assert r.status_code == 401
    r = pin_client.get("/api/v1/model", headers={PIN_HEADER: PIN})
    assert r.status_code == 429 and r.get_json()["error"]["code"] == "too_many_pin_attempts"
    assert r.headers["Retry-After"] == "1" and r.get_json()["error"]["retry_after_s"] == 1


@pytest.mark.slow
def test_require_pin_over_http(server_factory, tmp_path, monkeypatch):
    """A real server with --require-pin: the PIN is stored hashed (scrypt), reads need it."""
    from pneumo.app.web.pin import PIN_FILE

    monkeypatch.setenv("PNEUMO_PIN", PIN)
    srv = server_factory(tmp_path / "pin-data", "--require-pin")
    assert http("GET", srv.url + "api/v1/history").status == 401
    r = http("GET", srv.url + "api/v1/history", headers={"X-Access-PIN": PIN})
    assert r.status == 200
    stored = (tmp_path / "pin-data" / PIN_FILE).read_text()
    assert stored.startswith("scrypt$") and PIN not in stored.split("$", 4)[:4]
