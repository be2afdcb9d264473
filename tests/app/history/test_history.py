"""The SQLite history store."""

import sqlite3
import threading

import pytest

from pneumo.app.history.schema import FIELDS, SCHEMA_VERSION, parse_bound
from pneumo.app.history.store import HistoryStore
from pneumo.app.web.state import get_state


def _rec(i=0, **kw):
    rec = {"sha256": f"{i:064x}", "label": "NORMAL", "probability": 0.1 + i / 1000,
           "threshold": 0.5, "mode": "balanced", "model_version": "v1", "width": 224,
           "height": 224, "warnings": [{"code": "noisy", "message": "Noisy"}]}
    rec.update(kw)
    return rec


def test_add_get_page(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    ids = [store.add(_rec(i))["id"] for i in range(5)]
    got = store.get(ids[2])
    assert got["sha256"] == f"{2:064x}" and got["warnings"][0]["code"] == "noisy"
    items, total = store.page(1, 2)
    assert total == 5 and [r["id"] for r in items] == [ids[4], ids[3]]
    items, _ = store.page(3, 2)
    assert [r["id"] for r in items] == [ids[0]]
    assert [r["id"] for r in store.iter_all()] == ids
    assert store.get("nope") is None
    store.close()


def test_rollback_journal_and_durable_settings(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    conn = store._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # no -wal to lose
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_private_file_modes(tmp_path):
    import os
    import stat

    store = HistoryStore(tmp_path / "d" / "h.sqlite3")
    store.add(_rec())
    if os.name == "posix":
        for f in (tmp_path / "d").iterdir():
            assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f
        assert stat.S_IMODE((tmp_path / "d").stat().st_mode) & 0o077 == 0
    store.close()


def test_committed_before_add_returns(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    rid = store.add(_rec())["id"]
    other = sqlite3.connect(path)  # a separate connection sees it at once
    assert other.execute("SELECT COUNT(*) FROM predictions WHERE id=?", (rid,)).fetchone()[0] == 1
    other.close()
    store.close()


def test_heatmaps_kept_for_last_n_only(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3", heatmap_keep=3)
    ids = [store.add(_rec(i), heatmap=b"png%d" % i)["id"] for i in range(6)]
    assert store.heatmap(ids[0]) is None and store.heatmap(ids[2]) is None
    assert store.heatmap(ids[5]) == b"png5" and store.heatmap(ids[3]) == b"png3"
    assert store.get(ids[0])["has_heatmap"] is False
    assert store.get(ids[4])["has_heatmap"] is True
    store.close()


def test_images_only_when_kept(tmp_path):
    a = HistoryStore(tmp_path / "a.sqlite3")
    rid = a.add(_rec(format="JPEG"), image=b"imagebytes")["id"]
    assert a.image(rid) is None
    b = HistoryStore(tmp_path / "b.sqlite3", keep_images=True)
    rid = b.add(_rec(format="JPEG"), image=b"imagebytes")["id"]
    assert b.image(rid) == (b"imagebytes", "JPEG")
    a.close()
    b.close()


def test_date_filters(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    store.add(_rec(1, created_at="2025-01-01T10:00:00.000Z"))
    store.add(_rec(2, created_at="2025-01-02T23:59:59.999Z"))
    store.add(_rec(3, created_at="2025-01-03T00:00:00.000Z"))
    f, t = parse_bound("2025-01-02", end=False), parse_bound("2025-01-02", end=True)
    assert store.page(1, 50, f, t)[1] == 1
    assert store.page(1, 50, parse_bound("2025-01-02", end=False), None)[1] == 2
    assert store.page(1, 50, None, parse_bound("2025-01-01T12:00:00", end=True))[1] == 1
    with pytest.raises(ValueError):
        parse_bound("yesterday", end=False)
    store.close()


def test_one_connection_per_thread(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    errors, conns = [], set()

    def work(k):
        try:
            conns.add(id(store._conn()))
            for i in range(20):
                store.add(_rec(k * 100 + i))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(conns) == 6
    assert store.page(1, 1)[1] == 120
    store.close()


def test_fields_cover_the_required_record():
    for name in ("created_at", "sha256", "patient_ref", "label", "probability", "threshold",
                 "mode", "model_version", "width", "height", "warnings"):
        assert name in FIELDS


_SCHEMA_V1 = """
CREATE TABLE predictions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL,
    sha256 TEXT NOT NULL, patient_ref TEXT, label TEXT NOT NULL, probability REAL NOT NULL,
    threshold REAL NOT NULL, mode TEXT NOT NULL, model_name TEXT, model_version TEXT NOT NULL,
    model_sha256 TEXT, width INTEGER, height INTEGER, format TEXT, ood_distance REAL,
    warnings TEXT NOT NULL DEFAULT '[]', message TEXT);
CREATE INDEX predictions_created ON predictions(created_at);
CREATE TABLE heatmaps (id TEXT PRIMARY KEY REFERENCES predictions(id) ON DELETE CASCADE,
                       png BLOB NOT NULL);
CREATE TABLE images (id TEXT PRIMARY KEY REFERENCES predictions(id) ON DELETE CASCADE,
                     format TEXT, data BLOB NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO predictions (id, created_at, sha256, label, probability, threshold, mode,
                         model_version, warnings)
VALUES ('0123456789abcdef0123456789abcdef', '2025-01-01T00:00:00.000Z', 'ab', 'NORMAL', 0.2, 0.6,
        'balanced', 'v0', '[]');
"""


def test_confidence_stored(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    rid = store.add(_rec(confidence="borderline"))["id"]
    assert store.get(rid)["confidence"] == "borderline"
    assert store.add(_rec(1))["confidence"] is None
    store.close()


def test_old_database_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(_SCHEMA_V1)
    conn.close()
    old_id = "0123456789abcdef0123456789abcdef"
    for _ in range(2):  # opening twice must not try to add the column again
        store = HistoryStore(path)
        old = store.get(old_id)
        assert old["label"] == "NORMAL" and old["confidence"] is None
        rid = store.add(_rec(7, confidence="clear"))["id"]
        assert store.get(rid)["confidence"] == "clear"
        assert [r["id"] for r in store.iter_all()][0] == old_id
        store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == (
        str(SCHEMA_VERSION))
    assert conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 3
    conn.close()


_SCHEMA_V2 = _SCHEMA_V1.replace("mode TEXT NOT NULL,", "mode TEXT NOT NULL, confidence TEXT "
                                "DEFAULT NULL,").replace("('schema_version', '1')",
                                                         "('schema_version', '2')")


def test_schema_2_database_gets_file_name_and_calibration(tmp_path):
    path = tmp_path / "v2.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(_SCHEMA_V2)
    conn.execute("UPDATE predictions SET confidence = 'clear'")
    conn.commit()
    conn.close()
    old_id = "0123456789abcdef0123456789abcdef"
    store = HistoryStore(path)
    old = store.get(old_id)
    assert old["confidence"] == "clear"
    assert old["file_name"] is None and old["calibrated"] is None and old["bit_depth"] is None
    rid = store.add(_rec(3, file_name="Radiografía – niño.png", bit_depth=16, calibrated=True,
                         calibrated_on="external validation images"))["id"]
    new = store.get(rid)
    assert new["file_name"] == "Radiografía – niño.png" and new["bit_depth"] == 16
    assert new["calibrated"] is True and new["calibrated_on"] == "external validation images"
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    conn.close()


def test_old_database_served_by_the_app(model, tmp_path):
    import io

    from apptools import XRAY_NORMAL

    from pneumo.app.history.schema import DB_NAME
    from pneumo.app.web.app import create_app

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / DB_NAME)
    conn.executescript(_SCHEMA_V1)
    conn.close()
    app = create_app({"model": model, "data_dir": data_dir, "secret_key": "test-secret"})
    client = app.test_client()
    b = client.post("/api/v1/predict", content_type="multipart/form-data",
                    data={"image": (io.BytesIO(XRAY_NORMAL.read_bytes()), "x.jpeg")}).get_json()
    items = client.get("/api/v1/history").get_json()["items"]
    assert [r["confidence"] for r in items] == [b["confidence"], None]
    assert client.get("/api/v1/history.csv").status_code == 200
    assert client.get(f"/report/{items[1]['id']}").status_code == 200  # old record, no band
    get_state(app).history.close()
