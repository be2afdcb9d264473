"""The SQLite history store."""

import sqlite3
import threading

import pytest

from edge_app.history import FIELDS, HistoryStore, parse_bound


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


def test_wal_and_durable_settings(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    conn = store._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
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
    assert store.count(f, t) == 1
    assert store.count(parse_bound("2025-01-02", end=False), None) == 2
    assert store.count(None, parse_bound("2025-01-01T12:00:00", end=True)) == 1
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
    assert store.count() == 120
    store.close()


def test_fields_cover_the_required_record():
    for name in ("created_at", "sha256", "patient_ref", "label", "probability", "threshold",
                 "mode", "model_version", "width", "height", "warnings"):
        assert name in FIELDS
