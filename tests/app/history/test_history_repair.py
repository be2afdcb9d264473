"""`pneumo history check` / `pneumo history repair` (issue 14, point 2)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pneumo.app.history.repair import check, repair
from pneumo.app.history.schema import DB_NAME
from pneumo.app.history.store import HistoryStore
from pneumo.app.web.state import get_state
from pneumo.cli import main

N_RECORDS = 30


def _history(path: Path) -> None:
    """A real history with N_RECORDS records (each with a heatmap)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    store = HistoryStore(path)
    for i in range(N_RECORDS):
        store.add({"sha256": f"{i:064d}", "label": "NORMAL", "probability": 0.1,
                   "threshold": 0.5, "mode": "balanced", "model_version": "t",
                   "message": "m" * 2000}, heatmap=b"h" * 100)
    store.close()


def _damaged(kind: str, folder: Path) -> Path:
    """A garbage, truncated or foreign-schema history file in ``folder``."""
    path = folder / DB_NAME
    folder.mkdir(parents=True)
    if kind == "garbage":
        path.write_bytes(b"this is not a database\n" * 300)
    elif kind == "truncated":
        _history(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE predictions (name TEXT, score REAL)")
        conn.execute("INSERT INTO predictions VALUES ('a', 1.0)")
        conn.commit()
        conn.close()
    return path


def _cli(*argv: str) -> int:
    return main(["history", *argv])


def test_check_good_history_is_0(tmp_path, capsys):
    """A healthy history: exit 0, 'ok' with its record count; the file is unchanged."""
    path = tmp_path / "data" / DB_NAME
    _history(path)
    before = path.read_bytes()
    assert _cli("check", "--data-dir", str(path.parent)) == 0
    assert f"ok: {path} ({N_RECORDS} records)" in capsys.readouterr().out
    assert path.read_bytes() == before
    assert not path.with_name(DB_NAME + "-wal").exists()


def test_check_uses_the_servers_data_dir(tmp_path, monkeypatch, capsys):
    """Without --data-dir: $PNEUMO_DATA_DIR, as the server resolves it (config.resolve)."""
    path = _damaged("garbage", tmp_path / "env")
    monkeypatch.setenv("PNEUMO_DATA_DIR", str(path.parent))
    assert _cli("check") == 2
    assert str(path) in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["garbage", "truncated", "foreign"])
def test_check_damaged_is_2(tmp_path, kind, capsys):
    """A garbage, truncated or foreign file: exit 2, 'damaged' naming the file and the fix."""
    path = _damaged(kind, tmp_path / kind)
    before = path.read_bytes()
    assert _cli("check", "--data-dir", str(path.parent)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"damaged: {path}") and "pneumo history repair" in err
    assert path.read_bytes() == before


@pytest.mark.parametrize("kind", ["garbage", "truncated", "foreign"])
def test_repair_gives_a_history_the_app_starts_with(tmp_path, kind, model, capsys):
    """Repair: byte-identical backup beside it, a fresh history that checks ok and serves."""
    from pneumo.app.web.app import create_app

    path = _damaged(kind, tmp_path / kind)
    before = path.read_bytes()
    assert _cli("repair", "--data-dir", str(path.parent)) == 0
    out = capsys.readouterr().out
    backups = list(path.parent.glob(DB_NAME + ".damaged-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == before
    assert f"backup of the original: {backups[0]}" in out
    assert check(path).ok
    app = create_app({"model": model, "data_dir": path.parent, "secret_key": "s"})
    try:
        r = app.test_client().get("/api/v1/history?per_page=500")
        assert r.status_code == 200
        total = r.get_json()["total"]
    finally:
        get_state(app).history.close()
    if kind == "truncated":  # the first half of the records survives, the rest is counted lost
        assert 0 < total < N_RECORDS
        assert f"predictions: {total} rows recovered, {N_RECORDS - total} lost" in out
    else:
        assert total == 0 and "unreadable (nothing recovered): predictions" in out


def test_repair_of_a_healthy_history_keeps_everything(tmp_path):
    """Every record and heatmap is carried over; nothing lost; the backup stays."""
    path = tmp_path / DB_NAME
    _history(path)
    store = HistoryStore(path)
    items_before, _ = store.page(per_page=100)
    store.close()
    done = repair(path)
    assert done.recovered["predictions"] == N_RECORDS and done.lost["predictions"] == 0
    assert done.recovered["heatmaps"] == N_RECORDS and done.lost["heatmaps"] == 0
    assert done.backup.exists() and not path.with_name(DB_NAME + ".repairing").exists()
    store = HistoryStore(path)
    try:
        assert store.page(per_page=100)[0] == items_before
    finally:
        store.close()


def test_repair_of_an_old_schema_fills_the_new_columns_with_null(tmp_path):
    """A schema-1 history (no confidence, file_name...) is salvaged into the current schema."""
    path = tmp_path / DB_NAME
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE predictions (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, "
                 "created_at TEXT, sha256 TEXT, label TEXT, probability REAL, threshold REAL, "
                 "mode TEXT, model_version TEXT, warnings TEXT NOT NULL DEFAULT '[]')")
    conn.execute("INSERT INTO predictions (id, created_at, sha256, label, probability, "
                 "threshold, mode, model_version) VALUES ('a' , '2025-01-01T00:00:00.000Z', "
                 "'s', 'NORMAL', 0.2, 0.5, 'balanced', '1')")
    conn.commit()
    conn.close()
    done = repair(path)
    assert done.recovered["predictions"] == 1
    store = HistoryStore(path)
    try:
        rec = store.get("a")
    finally:
        store.close()
    assert rec["label"] == "NORMAL" and rec["file_name"] is None and rec["confidence"] is None


def test_repair_without_a_history_is_2(tmp_path, capsys):
    """Nothing to repair: exit 2 naming the path; nothing created."""
    assert _cli("repair", "--data-dir", str(tmp_path)) == 2
    assert str(tmp_path / DB_NAME) in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_repair_keeps_commits_still_in_the_wal(tmp_path):
    """A history copied while the server ran (recent commits only in -wal): all salvaged."""
    import shutil

    live = tmp_path / "live" / DB_NAME
    live.parent.mkdir()
    HistoryStore(live, heatmap_keep=0).close()
    conn = sqlite3.connect(live)  # as a version before issue 26 wrote it: WAL
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    try:
        for i in range(5):
            with conn:
                conn.execute("INSERT INTO predictions(id, created_at, sha256, label, "
                             "probability, threshold, mode, model_version) "
                             "VALUES (?, '2026-01-01T00:00:00Z', ?, 'NORMAL', 0.1, 0.5, "
                             "'balanced', 't')", (f"r{i}", f"{i}"))
        path = tmp_path / "copy" / DB_NAME
        path.parent.mkdir()
        for side in ("", "-wal"):
            shutil.copyfile(str(live) + side, str(path) + side)
    finally:
        conn.close()
    assert path.with_name(DB_NAME + "-wal").stat().st_size > 0
    done = repair(path)
    assert done.recovered["predictions"] == 5
    assert done.backup.with_name(done.backup.name + "-wal").exists()
    assert not path.with_name(DB_NAME + "-wal").exists()
    assert check(path).message.endswith("(5 records)")
