"""Faults a clinic's history meets (issue 26): a lock held by another program, a lost -wal,
SIGTERM, a history emptied or put back behind the app's back. Real SQLite locks held by
another process, real Waitress servers, kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from apptools import XRAY_NORMAL, http, post_image, start_server
from locktools import Locker

from pneumo.app.history.faults import IN_USE_ADVICE, RecordsMissing, StorageBusy
from pneumo.app.history.integrity import read_saved, saved_path
from pneumo.app.history.repair import check
from pneumo.app.history.schema import DB_NAME
from pneumo.app.history.store import HistoryStore
from pneumo.cli import main


def _rec(i: int) -> dict:
    return {"sha256": f"{i:064d}", "label": "NORMAL", "probability": 0.1, "threshold": 0.5,
            "mode": "balanced", "model_version": "t"}


def _ids(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM predictions")}
    finally:
        conn.close()


@pytest.mark.parametrize("legacy_wal", [False, True], ids=["journal", "wal-made-by-older"])
def test_a_lock_held_at_start_is_in_use_never_damaged(tmp_path, legacy_wal):
    path = tmp_path / DB_NAME
    store = HistoryStore(path)
    store.add(_rec(1))
    store.close()
    if legacy_wal:
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
    before = path.read_bytes()
    locker = Locker(path)
    try:
        t0 = time.monotonic()
        with pytest.raises(StorageBusy) as err:
            HistoryStore(path, busy_timeout_s=0.5)
        waited = time.monotonic() - t0
    finally:
        locker.release()
    text = str(err.value)
    assert "in use by another program" in text and IN_USE_ADVICE in text
    assert "damaged or" not in text and "Move it aside" not in text
    assert waited < 10
    assert path.read_bytes() == before  # nothing changed
    store = HistoryStore(path)  # once the other program lets go: the same history
    assert len(store.recent(10)) == 1
    store.close()


def test_serving_with_the_history_locked_answers_503_and_retry_after(test_model_path, tmp_path):
    srv = start_server(test_model_path, tmp_path / "d", "--history-busy-timeout", "0.5")
    try:
        assert post_image(srv.url, XRAY_NORMAL.read_bytes()).status == 200
        locker = Locker(tmp_path / "d" / DB_NAME)
        try:
            busy = post_image(srv.url, XRAY_NORMAL.read_bytes())
            listing = http("GET", srv.url + "api/v1/history")
        finally:
            locker.release()
        assert busy.status == 503, busy.body
        err = busy.json()["error"]
        assert err["code"] == "history_busy" and "another program" in err["message"]
        assert busy.headers["Retry-After"] == str(err["retry_after_s"])
        assert listing.status == 503 and listing.json()["error"]["code"] == "history_busy"
        again = post_image(srv.url, XRAY_NORMAL.read_bytes())
        assert again.status == 200
        assert http("GET", srv.url + "api/v1/history").json()["total"] == 2
    finally:
        srv.stop()
    log = "".join(srv.lines)
    assert "Traceback" not in log and "internal error" not in log
    assert "in use by another program" in log


def test_sigterm_stops_cleanly_and_no_record_is_lost_with_the_wal(test_model_path, tmp_path):
    """The audit's worst case: first run stopped by SIGTERM, 6 more uploads, kill -9, the
    -wal lost: every acknowledged record is there, and the app starts."""
    data = tmp_path / "d"
    acked = []
    srv = start_server(test_model_path, data)
    for _ in range(3):
        acked.append(post_image(srv.url, XRAY_NORMAL.read_bytes()).json()["id"])
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=30) == 0
    srv.stop()
    assert any(line.strip() == "stopping" for line in srv.lines), srv.lines  # the clean path
    srv = start_server(test_model_path, data)  # the lock was released: a second start works
    for _ in range(6):
        acked.append(post_image(srv.url, XRAY_NORMAL.read_bytes()).json()["id"])
    srv.kill()
    for side in ("-wal", "-shm"):
        Path(f"{data / DB_NAME}{side}").unlink(missing_ok=True)
    assert set(acked) <= _ids(data / DB_NAME)
    srv = start_server(test_model_path, data)
    try:
        assert http("GET", srv.url + "api/v1/history").json()["total"] == 9
    finally:
        srv.stop()


def test_kill_9_under_load_then_the_wal_deleted_loses_no_acknowledged_record(
        test_model_path, tmp_path):
    data = tmp_path / "d"
    srv = start_server(test_model_path, data, "--threads", "8")
    acked: list[str] = []
    stop = threading.Event()
    image = XRAY_NORMAL.read_bytes()

    def client():
        while not stop.is_set():
            try:
                reply = post_image(srv.url, image)
            except OSError:
                return  # the server died under us: not acknowledged
            if reply.status == 200:
                acked.append(reply.json()["id"])

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while len(acked) < 24 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(srv.proc.pid, signal.SIGKILL)  # mid-load: uploads in flight
    stop.set()
    for t in threads:
        t.join(timeout=60)
    srv.proc.wait(timeout=30)
    srv.stop()
    assert len(acked) >= 24
    for side in ("-wal", "-shm"):
        Path(f"{data / DB_NAME}{side}").unlink(missing_ok=True)
    store = HistoryStore(data / DB_NAME)  # also rolls back a write cut by the kill
    try:
        have = {r["id"] for r in store.iter_all()}
    finally:
        store.close()
    assert set(acked) <= have, f"{len(set(acked) - have)} of {len(acked)} acknowledged lost"


def test_an_emptied_or_older_history_is_reported_at_start_up(tmp_path, capsys):
    path = tmp_path / DB_NAME
    store = HistoryStore(path)
    for i in range(3):
        store.add(_rec(i))
    store.close()
    older = tmp_path / "older.sqlite3"
    older.write_bytes(path.read_bytes())  # a copy "put back" later
    store = HistoryStore(path)
    for i in range(3, 9):
        store.add(_rec(i))
    store.close()
    assert read_saved(path) == 9
    for name, content in (("older copy", older.read_bytes()), ("emptied", b"")):
        path.write_bytes(content)
        with pytest.raises(RecordsMissing) as err:
            HistoryStore(path)
        text = str(err.value)
        assert "saved records are missing" in text and "--accept-missing" in text, name
        verdict = check(path)
        assert not verdict.ok and "records missing" in verdict.message, name
    # the serve command refuses in the same words (exit 2), and check says so too
    assert main(["history", "check", "--data-dir", str(tmp_path)]) == 2
    assert "9 saved records are missing" in capsys.readouterr().err
    # going on with what the file holds is one audited command
    assert main(["history", "check", "--data-dir", str(tmp_path), "--accept-missing"]) == 0
    assert "accepted: 9" in capsys.readouterr().out
    store = HistoryStore(path)
    audit = store.audit(action="missing_records_accepted")
    assert audit[0]["old"] == {"saved_up_to": 9} and audit[0]["new"]["missing"] == 9
    store.close()


def test_serve_refuses_an_emptied_history_in_plain_words(test_model_path, tmp_path):
    data = tmp_path / "d"
    store = HistoryStore(data / DB_NAME)
    store.add(_rec(1))
    store.close()
    (data / DB_NAME).write_bytes(b"")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    done = subprocess.run([sys.executable, "-m", "pneumo.app", "serve", "--port", "0",
                           "--model", str(test_model_path), "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "1 saved records are missing" in done.stderr and "Traceback" not in done.stderr


def test_upgrade_from_wal_keeps_every_record_and_writes_the_counter(tmp_path):
    path = tmp_path / DB_NAME
    HistoryStore(path).close()
    saved_path(path).unlink()  # as an older version left it: no counter, WAL
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    with conn:
        conn.execute("INSERT INTO predictions(id, created_at, sha256, label, probability, "
                     "threshold, mode, model_version) VALUES ('a', '2026-01-01T00:00:00Z', "
                     "'x', 'NORMAL', 0.1, 0.5, 'balanced', 't')")
    conn.close()
    store = HistoryStore(path)
    try:
        mode = store._conn().execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "delete" and store.get("a") is not None
    finally:
        store.close()
    assert not Path(f"{path}-wal").exists() and read_saved(path) == 1
