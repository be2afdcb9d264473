"""History backups (consistent while a real server answers uploads) and retention
(`pneumo history purge`, `pneumo serve --retain-days`), audited by counts only."""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest
from apptools import XRAY_NORMAL, http, post_image, start_server

from pneumo.app.history.backup import backup_history, retention_cutoff
from pneumo.app.history.repair import check
from pneumo.app.history.schema import DB_NAME, FIELDS
from pneumo.app.history.store import HistoryStore
from pneumo.cli import main as pneumo

OLD_REF = "OLD-PATIENT-REF-7731"


def _record(created_at: str, ref: str) -> dict:
    return {"created_at": created_at, "sha256": "ab" * 32, "patient_ref": ref,
            "label": "NORMAL", "probability": 0.1, "threshold": 0.37, "mode": "balanced",
            "model_version": "test"}


def _fill(data: Path) -> None:
    """Two old records (2020, with heatmap and kept image), one new one, old and new refusals."""
    store = HistoryStore(data / DB_NAME, keep_images=True)
    try:
        for day in ("2020-01-02", "2020-03-04"):
            store.add(_record(f"{day}T10:00:00.000Z", OLD_REF), heatmap=b"heat" * 100,
                      image=b"image" * 100)
        store.add(_record(retention_cutoff(-1), "NEW-REF"), heatmap=b"heat", image=b"img")
        with store._conn() as conn:
            conn.execute("INSERT INTO refusals(at, codes, source) VALUES "
                         "('2020-01-05T00:00:00.000Z', '[\"not_xray\"]', 'upload')")
        store.add_refusal(["not_xray"])
    finally:
        store.close()


def _rows(db: Path, table: str = "predictions") -> dict[str, tuple]:
    conn = sqlite3.connect(db)
    try:
        cols = FIELDS if table == "predictions" else ("id",)
        return {r[0]: r for r in conn.execute(f"SELECT {', '.join(cols)} FROM {table}")}
    finally:
        conn.close()


def test_purge_deletes_old_records_and_audits_counts_not_content(tmp_path, capsys):
    data = tmp_path / "data"
    _fill(data)
    assert pneumo(["history", "purge", "--before", "2021-01-01", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "2 records (2020-01-02T10:00:00.000Z .. 2020-03-04T10:00:00.000Z)" in out
    assert "2 heatmaps, 2 kept images, 1 refusal counts" in out
    store = HistoryStore(data / DB_NAME)
    try:
        assert [r["patient_ref"] for r in store.recent(10)] == ["NEW-REF"]
        assert len(store.recent_refusals(10)) == 1
        (row,) = store.audit(action="purge")
        assert row["new"] == {"predictions": 2, "heatmaps": 2, "images": 2, "refusals": 1}
        assert row["old"]["before"] == "2021-01-01T00:00:00.000Z"
        assert OLD_REF not in json.dumps(row)
    finally:
        store.close()
    assert len(_rows(data / DB_NAME, "heatmaps")) == 1 and len(_rows(data / DB_NAME, "images")) == 1
    # secure_delete: the purged patient reference is gone from the file, not only unlinked
    assert OLD_REF.encode() not in (data / DB_NAME).read_bytes()


def test_purge_refuses_a_bad_date(tmp_path, capsys):
    data = tmp_path / "data"
    _fill(data)
    assert pneumo(["history", "purge", "--before", "last tuesday", "--data-dir",
                   str(data)]) == 2
    assert "--before 'last tuesday'" in capsys.readouterr().err
    assert len(_rows(data / DB_NAME)) == 3


def test_serve_retain_days_purges_at_start_and_is_audited(tmp_path, test_model_path):
    data = tmp_path / "data"
    _fill(data)
    server = start_server(test_model_path, data, "--retain-days", "30")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            body = json.loads(http("GET", server.url + "api/v1/history").body)
            if body["total"] == 1:
                break
            time.sleep(0.2)
    finally:
        server.stop()
    assert body["total"] == 1 and body["items"][0]["patient_ref"] == "NEW-REF"
    assert any("retention: records older than 30 days" in line for line in server.lines)
    store = HistoryStore(data / DB_NAME)
    try:
        (row,) = store.audit(action="purge")
    finally:
        store.close()
    assert row["by"] == "retain-days 30" and row["new"]["predictions"] == 2


def test_backup_under_load_restores_the_same_rows(tmp_path, test_model_path):
    data = tmp_path / "data"
    server = start_server(test_model_path, data, "--keep-images")
    image = XRAY_NORMAL.read_bytes()
    live_db = data / DB_NAME
    stop = threading.Event()
    answered: list[int] = []
    failures: list[str] = []

    def upload(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            r = post_image(server.url, image, fields={"patient_ref": f"load-{n}-{i}"})
            (answered if r.status == 200 else failures).append(r.status)

    workers = [threading.Thread(target=upload, args=(n,)) for n in range(3)]
    backups = []
    try:
        for w in workers:
            w.start()
        while len(answered) < 5:
            time.sleep(0.05)
        for k in range(4):  # back up while uploads keep being answered and committed
            before = len(_rows(live_db))
            out = tmp_path / "backups" / f"history-{k}.sqlite3"
            counts = backup_history(live_db, out)
            after = len(_rows(live_db))
            backups.append((out, counts, before, after))
            time.sleep(0.3)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=60)
    try:
        final = _rows(live_db)
        for out, counts, before, after in backups:
            assert stat.S_IMODE(out.stat().st_mode) == 0o600
            assert before <= counts["predictions"] <= after
            assert check(out).ok
            copied = _rows(out)
            assert len(copied) == counts["predictions"]
            assert all(final[i] == row for i, row in copied.items())  # identical rows
            assert counts["images"] == counts["predictions"]  # each record with its image
        assert not failures and len(answered) > backups[-1][1]["predictions"] > 0
        print(f"backup under load: {len(answered)} uploads answered; backups held "
              f"{[b[1]['predictions'] for b in backups]} records "
              f"(live counts around them: {[(b[2], b[3]) for b in backups]})")
    finally:
        server.stop()
    # restore: the backup becomes a data folder's history, served as usual
    restored = tmp_path / "restored"
    restored.mkdir()
    out, counts = backups[-1][0], backups[-1][1]
    shutil.copyfile(out, restored / DB_NAME)
    server = start_server(test_model_path, restored)
    try:
        body = json.loads(http("GET", server.url + "api/v1/history?per_page=200").body)
    finally:
        server.stop()
    assert body["total"] == counts["predictions"]
    assert {r["id"] for r in body["items"]} == set(_rows(out))


def test_backup_cli_reports_counts_and_refuses_a_missing_history(tmp_path, capsys):
    data = tmp_path / "data"
    _fill(data)
    out = tmp_path / "b.sqlite3"
    assert pneumo(["history", "backup", "--out", str(out), "--data-dir", str(data)]) == 0
    assert "predictions 3, heatmaps 3, images 3" in capsys.readouterr().out
    assert _rows(out) == _rows(data / DB_NAME)
    assert pneumo(["history", "backup", "--out", str(out), "--data-dir",
                   str(tmp_path / "none")]) == 2
    assert "no history database" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-3"])
def test_retain_days_must_be_positive(bad, tmp_path, capsys):
    assert pneumo(["serve", "--retain-days", bad, "--data-dir", str(tmp_path)]) == 2
    assert "--retain-days must be at least 1" in capsys.readouterr().err


def test_executable_launcher_backs_up(tmp_path):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[3]
    data = tmp_path / "data"
    _fill(data)
    out = tmp_path / "exe-backup.sqlite3"
    done = subprocess.run([sys.executable, str(repo / "installer" / "entry.py"), "--backup",
                           str(out), "--data-dir", str(data)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(repo)), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "predictions 3" in done.stdout and _rows(out) == _rows(data / DB_NAME)
