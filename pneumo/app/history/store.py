"""Prediction history in SQLite (stdlib sqlite3, a rollback journal, one connection per thread).

Every answered prediction is committed (``synchronous=FULL``) into the main database file
before the HTTP response is sent, so a server killed hard loses no acknowledged record, and
there is no ``-wal`` file whose loss could take acknowledged records with it (journal mode
DELETE, chosen by measurement: tests/app/history/measure_commit_cost.py; a database made in
WAL mode by an older version is switched on open). The acknowledged-records counter and the
read-only checks are in `pneumo.app.history.integrity`, the errors in `.faults`, the columns
and what each schema version added in `.schema`. The recent heatmaps (packed CAM + small
grayscale copy, drawn as PNG on request) are kept in the same database (the last
``heatmap_keep``); uploaded images only with ``keep_images``; refused images leave only a
time and the reason codes in ``refusals`` (for the drift check: no image, hash or patient
data). A database made by an older version gets the missing columns on open (NULL for its
old records: those facts were never recorded).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from pneumo.app.config import DEFAULTS
from pneumo.app.history.faults import (
    IN_USE_ADVICE,
    RecordsMissing,
    StorageBusy,
    StorageError,
    is_busy,
    is_disk_full,
    raise_storage_error,
)
from pneumo.app.history.integrity import (
    file_problem,
    highest_seq,
    hot_journal,
    missing_message,
    read_saved,
    saved_path,
    write_saved,
)
from pneumo.app.history.schema import (
    ADDED_COLUMNS,
    AUDIT_FIELDS,
    FIELDS,
    FINDINGS,
    INDEXES_SQL,
    SCHEMA_SQL,
    SCHEMA_VERSION,
    new_id,
    parse_bound,
    utc_now_iso,
)

log = logging.getLogger(__name__)



class HistoryStore:
    """The history database; safe to share between threads (each gets its own connection)."""

    def __init__(self, path: str | Path, *, heatmap_keep: int = DEFAULTS["heatmap_keep"],
                 keep_images: bool = False,
                 busy_timeout_s: float = DEFAULTS["history_busy_timeout_s"],
                 check_saved: bool = True):
        self.path = Path(path)
        self.heatmap_keep = int(heatmap_keep)
        self.keep_images = bool(keep_images)
        self.busy_timeout_s = float(busy_timeout_s)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._prepare_folder()
        self._check_existing()
        try:
            conn = self._conn()
            conn.executescript(SCHEMA_SQL)
            self._migrate(conn)
            self._saved = self._check_saved(conn) if check_saved else highest_seq(conn)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise self._open_error(exc) from exc
        except StorageError:
            self.close()
            raise

    def _check_saved(self, conn: sqlite3.Connection) -> int:
        """The highest acknowledged record number; RecordsMissing if the file lost some."""
        have = highest_seq(conn)
        saved = read_saved(self.path)
        if saved is not None and saved > have:
            log.error("history %s: %d acknowledged records are missing (file up to %d, saved "
                      "up to %d)", self.path, saved - have, have, saved)
            raise RecordsMissing(missing_message(self.path, have, saved)
                                 + " The app did not start, so nothing more is lost.")
        if saved is None or saved < have:  # first start with this version, or an unreadable file
            write_saved(self.path, have)
        return have

    def _prepare_folder(self) -> None:
        """Create the data folder and an empty database file (this user only), or StorageError."""
        folder = self.path.parent
        try:
            # Patient data: readable by this user only (SQLite gives -wal/-shm the same mode).
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        except (FileExistsError, NotADirectoryError) as exc:
            raise StorageError(f"the data folder {folder} cannot be used: a file is in the way "
                               f"({exc.strerror or exc}). Choose another folder with "
                               "--data-dir, or move that file aside.") from exc
        except OSError as exc:
            raise StorageError(f"the data folder {folder} cannot be written "
                               f"({exc.strerror or exc}). Make it writable for this user, or "
                               "choose another folder with --data-dir.") from exc
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StorageError(f"the data folder {folder} is read-only. Make it writable for "
                               "this user, or choose another folder with --data-dir.")

    def _check_existing(self) -> None:
        """Refuse (StorageError) a file that is not a pneumo history, without changing it."""
        if self.path.stat().st_size == 0:
            return  # new: the schema is created next
        if hot_journal(self.path):
            self._recover()
        try:
            why = file_problem(self.path, timeout=self.busy_timeout_s)
        except sqlite3.DatabaseError as exc:
            raise self._open_error(exc) from exc
        if why:
            raise self._damaged(why)

    def _recover(self) -> None:
        """Let SQLite roll back a write interrupted by a crash (its -journal) before checks."""
        log.info("history %s: a write was interrupted; SQLite rolls it back", self.path)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._open_error(exc) from exc
        finally:
            conn.close()

    def _damaged(self, why: str) -> StorageError:
        """The start-up error for a history file we must not use."""
        return StorageError(f"the history database {self.path} cannot be used: {why}. It was "
                            "left unchanged. Move it aside (rename it, e.g. to "
                            f"{self.path.name}.damaged) and start again: a new, empty history "
                            "is created; keep the old file for recovery.")

    def _open_error(self, exc: sqlite3.DatabaseError) -> StorageError:
        """A StorageError for an sqlite3 error met while opening the history."""
        text = str(exc)
        if is_busy(exc):
            log.error("history %s is in use by another program (locked for more than %g s)",
                      self.path, self.busy_timeout_s)
            return StorageBusy(f"the history database {self.path} is in use by another "
                               f"program (it stayed locked for {self.busy_timeout_s:g} s). "
                               + IN_USE_ADVICE)
        if is_disk_full(exc):
            return StorageError(f"the disk holding {self.path} is full. Free some space and "
                                "start again.")
        if "readonly" in text or "unable to open" in text:
            return StorageError(f"the history database {self.path} cannot be written ({text}). "
                                "Make the data folder writable for this user, or choose another "
                                "folder with --data-dir.")
        return self._damaged(f"it is damaged or not a database ({text})")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring an older database up to SCHEMA_VERSION (add missing columns) and record it."""
        conn.execute("BEGIN IMMEDIATE")  # one process at a time checks and alters
        try:
            have = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
            for name, decl in ADDED_COLUMNS.items():
                if name not in have:
                    conn.execute(f"ALTER TABLE predictions ADD COLUMN {name} {decl}")
                    log.info("history %s: added column %s (schema %d)", self.path, name,
                             SCHEMA_VERSION)
            # Schema 5: what older records showed, by the rule of pneumo.app.pipeline.outcome
            # (stored_outcome): the borderline band was the review band.
            conn.execute("UPDATE predictions SET outcome = CASE "
                         "WHEN confidence = 'borderline' THEN 'review' "
                         "WHEN label = 'PNEUMONIA' THEN 'pneumonia' ELSE 'no_signs' END "
                         "WHERE outcome IS NULL")
            for statement in INDEXES_SQL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None or int(row[0]) < SCHEMA_VERSION:
                conn.execute("INSERT OR REPLACE INTO meta(key, value) "
                             "VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            try:
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
                # A commit is in the main file (no -wal to lose): see the module docstring.
                conn.execute("PRAGMA journal_mode=DELETE")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.DatabaseError:
                conn.close()  # never left open: it would hold the file for the next try
                raise
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def add(self, record: dict, *, heatmap: bytes | None = None,
            image: bytes | None = None) -> dict:
        """Insert one prediction (and its heatmap / image) and commit; returns the record."""
        rec = {k: record.get(k) for k in FIELDS}
        rec["id"] = rec["id"] or new_id()
        rec["created_at"] = rec["created_at"] or utc_now_iso()
        warnings = rec["warnings"] or []
        rec["warnings"] = warnings if isinstance(warnings, str) else json.dumps(warnings)
        if isinstance(rec["orientation"], dict):
            rec["orientation"] = json.dumps(rec["orientation"], sort_keys=True)
        try:
            seq = self._insert(rec, heatmap, image)
        except (sqlite3.OperationalError, OSError) as exc:
            raise_storage_error(exc, self.path)
            raise
        with self._lock:  # acknowledged: kept outside the database too
            if seq > self._saved:
                self._saved = seq
                try:
                    write_saved(self.path, seq, rec["id"])
                except OSError as exc:
                    log.warning("history %s: %s not updated (%s)", self.path,
                                saved_path(self.path).name, exc)
        return self._decode(rec)

    def _insert(self, rec: dict, heatmap: bytes | None, image: bytes | None) -> int:
        """The INSERTs of one prediction, in one committed transaction; its record number."""
        conn = self._conn()
        with conn:  # one transaction, committed on exit
            seq = conn.execute(f"INSERT INTO predictions ({', '.join(FIELDS)}) "
                               f"VALUES ({', '.join('?' * len(FIELDS))})",
                               [rec[k] for k in FIELDS]).lastrowid
            if heatmap is not None and self.heatmap_keep > 0:
                conn.execute("INSERT INTO heatmaps(id, png) VALUES (?, ?)", (rec["id"], heatmap))
                conn.execute("DELETE FROM heatmaps WHERE rowid <= (SELECT rowid FROM heatmaps "
                             "ORDER BY rowid DESC LIMIT 1 OFFSET ?)", (self.heatmap_keep,))
            if image is not None and self.keep_images:
                conn.execute("INSERT INTO images(id, format, data) VALUES (?, ?, ?)",
                             (rec["id"], rec.get("format"), image))
        return int(seq)

    @staticmethod
    def _decode(row) -> dict:
        """A database row as a JSON-ready dict."""
        rec = {k: row[k] for k in FIELDS}
        if rec["calibrated"] is not None:
            rec["calibrated"] = bool(rec["calibrated"])
        if rec["drift"] is not None:
            rec["drift"] = bool(rec["drift"])
        try:
            rec["warnings"] = json.loads(rec["warnings"] or "[]")
        except ValueError:
            rec["warnings"] = []
        try:
            rec["orientation"] = json.loads(rec["orientation"]) if rec["orientation"] else None
        except ValueError:
            rec["orientation"] = None
        return rec

    def get(self, record_id: str) -> dict | None:
        """One record by id, or None."""
        row = self._conn().execute(
            f"SELECT {', '.join(FIELDS)}, EXISTS(SELECT 1 FROM heatmaps h WHERE h.id = p.id) "
            "AS has_heatmap FROM predictions p WHERE id = ?", (record_id,)).fetchone()
        if row is None:
            return None
        rec = self._decode(row)
        rec["has_heatmap"] = bool(row["has_heatmap"])
        return rec

    def find_sop(self, sop_uid: str) -> dict | None:
        """The record made from a DICOM SOPInstanceUID, or None."""
        row = self._conn().execute("SELECT id FROM predictions WHERE sop_uid = ?",
                                   (sop_uid,)).fetchone()
        return self.get(row[0]) if row else None

    def set_finding(self, record_id: str, finding: str, note: str | None = None,
                    by: str | None = None) -> dict | None:
        """Record the clinician's finding (kept in the audit table); the record, or None."""
        if finding not in FINDINGS:
            raise ValueError(f"finding must be one of {', '.join(FINDINGS)}")
        conn = self._conn()
        now = utc_now_iso()
        try:
            with conn:
                row = conn.execute("SELECT finding, finding_note, finding_by FROM predictions "
                                   "WHERE id = ?", (record_id,)).fetchone()
                if row is None:
                    return None
                old = {"finding": row[0], "note": row[1], "by": row[2]}
                new = {"finding": finding, "note": note, "by": by}
                conn.execute("UPDATE predictions SET finding = ?, finding_note = ?, "
                             "finding_by = ?, finding_at = ? WHERE id = ?",
                             (finding, note, by, now, record_id))
                self._audit(conn, "confirmation", record_id, old, new, by, now)
        except (sqlite3.OperationalError, OSError) as exc:
            raise_storage_error(exc, self.path)
            raise
        return self.get(record_id)

    @staticmethod
    def _audit(conn: sqlite3.Connection, action: str, record_id: str | None, old, new,
               by: str | None, at: str) -> None:
        """Append one audit row inside the caller's transaction."""
        conn.execute("INSERT INTO audit(at, action, record_id, old, new, by) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (at, action, record_id, json.dumps(old), json.dumps(new), by))

    def add_audit(self, action: str, old, new, by: str | None = None,
                  record_id: str | None = None) -> None:
        """Append one audit row (e.g. a calibration accepted or reverted) and commit."""
        conn = self._conn()
        try:
            with conn:
                self._audit(conn, action, record_id, old, new, by, utc_now_iso())
        except (sqlite3.OperationalError, OSError) as exc:
            raise_storage_error(exc, self.path)
            raise

    def purge(self, before: str, *, by: str | None = None) -> dict:
        """Delete records (with heatmaps, kept images) and refusals made before ``before``.

        ``before`` is a date or datetime (UTC if naive). The deleted content is overwritten
        (secure_delete); one ``purge`` audit row records the counts and the date range only.
        Returns {"before", "predictions", "heatmaps", "images", "refusals", "oldest", "newest"}.
        """
        bound = parse_bound(before, end=False)
        conn = self._conn()
        conn.execute("PRAGMA secure_delete=ON")
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                ids = "SELECT id FROM predictions WHERE created_at < ?"
                oldest, newest, n = conn.execute(
                    "SELECT MIN(created_at), MAX(created_at), COUNT(*) FROM predictions "
                    "WHERE created_at < ?", (bound,)).fetchone()
                done = {"before": bound, "predictions": n, "oldest": oldest, "newest": newest}
                done["heatmaps"] = conn.execute(f"DELETE FROM heatmaps WHERE id IN ({ids})",
                                                (bound,)).rowcount
                done["images"] = conn.execute(f"DELETE FROM images WHERE id IN ({ids})",
                                              (bound,)).rowcount
                conn.execute("DELETE FROM predictions WHERE created_at < ?", (bound,))
                done["refusals"] = conn.execute("DELETE FROM refusals WHERE at < ?",
                                                (bound,)).rowcount
                span = {"before": bound, "oldest": oldest, "newest": newest}
                counts = {k: done[k] for k in ("predictions", "heatmaps", "images", "refusals")}
                self._audit(conn, "purge", None, span, counts, by, utc_now_iso())
        except (sqlite3.OperationalError, OSError) as exc:
            raise_storage_error(exc, self.path)
            raise
        finally:
            conn.execute("PRAGMA secure_delete=OFF")
        if done["predictions"] or done["refusals"]:
            log.info("history %s: purged %d records (%s .. %s), %d heatmaps, %d images, "
                     "%d refusals made before %s", self.path, done["predictions"], oldest,
                     newest, done["heatmaps"], done["images"], done["refusals"], bound)
        return done

    def audit(self, record_id: str | None = None, action: str | None = None) -> list[dict]:
        """Audit rows, oldest first (optionally for one record or one action)."""
        clauses, params = [], []
        if record_id is not None:
            clauses.append("record_id = ?")
            params.append(record_id)
        if action is not None:
            clauses.append("action = ?")
            params.append(action)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._conn().execute(f"SELECT {', '.join(AUDIT_FIELDS)} FROM audit{where} "
                                    "ORDER BY seq", params).fetchall()
        out = []
        for row in rows:
            item = {k: row[k] for k in AUDIT_FIELDS}
            for key in ("old", "new"):
                item[key] = json.loads(item[key]) if item[key] else None
            out.append(item)
        return out

    def confirmed(self, model_sha256: str | None = None) -> list[dict]:
        """Records confirmed ``normal`` or ``pneumonia`` (optionally by one model), oldest first."""
        sql = (f"SELECT {', '.join(FIELDS)} FROM predictions WHERE finding IN "
               "('normal', 'pneumonia')")
        params: list = []
        if model_sha256 is not None:
            sql += " AND model_sha256 = ?"
            params.append(model_sha256)
        return [self._decode(r) for r in self._conn().execute(sql + " ORDER BY seq", params)]

    def add_refusal(self, codes: list[str], source: str = "upload") -> None:
        """Count one refused image (time and reason codes only); a full disk is ignored."""
        conn = self._conn()
        try:
            with conn:
                conn.execute("INSERT INTO refusals(at, codes, source) VALUES (?, ?, ?)",
                             (utc_now_iso(), json.dumps(codes), source))
        except (sqlite3.OperationalError, OSError) as exc:
            if not is_disk_full(exc):
                raise
            log.warning("history %s: disk full, a refusal was not counted", self.path)

    def recent_refusals(self, n: int) -> list[str]:
        """Times of the last ``n`` refused images, newest first."""
        rows = self._conn().execute("SELECT at FROM refusals ORDER BY seq DESC LIMIT ?",
                                    (int(n),)).fetchall()
        return [r[0] for r in rows]

    def recent(self, n: int) -> list[dict]:
        """The last ``n`` records, newest first."""
        rows = self._conn().execute(f"SELECT {', '.join(FIELDS)} FROM predictions "
                                    "ORDER BY seq DESC LIMIT ?", (int(n),)).fetchall()
        return [self._decode(r) for r in rows]

    def recent_scores(self, n: int) -> list[dict]:
        """The last ``n`` records' time, model, probability and OOD distance (what the drift
        check reads), newest first: the other columns are neither read nor decoded."""
        return [dict(r) for r in self._conn().execute(
            "SELECT created_at, model_sha256, probability, ood_distance FROM predictions "
            "ORDER BY seq DESC LIMIT ?", (int(n),))]

    def heatmap(self, record_id: str) -> bytes | None:
        """The stored heatmap (PNG or `heatmap.pack` source) of a record, or None if pruned."""
        row = self._conn().execute("SELECT png FROM heatmaps WHERE id = ?",
                                   (record_id,)).fetchone()
        return bytes(row[0]) if row else None

    def image(self, record_id: str) -> tuple[bytes, str] | None:
        """The stored upload (bytes, format) of a record, if images are kept."""
        row = self._conn().execute("SELECT data, format FROM images WHERE id = ?",
                                   (record_id,)).fetchone()
        return (bytes(row[0]), row[1]) if row else None

    @staticmethod
    def _where(date_from: str | None, date_to: str | None) -> tuple[str, list]:
        """SQL WHERE clause and parameters for a created_at range [from, to)."""
        clauses, params = [], []
        if date_from:
            clauses.append("created_at >= ?")
            params.append(date_from)
        if date_to:
            clauses.append("created_at < ?")
            params.append(date_to)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def page(self, page: int = 1, per_page: int = 50, date_from: str | None = None,
             date_to: str | None = None) -> tuple[list[dict], int]:
        """(records of one page, newest first, total count) in a date range."""
        where, params = self._where(date_from, date_to)
        conn = self._conn()
        total = int(conn.execute(f"SELECT COUNT(*) FROM predictions{where}", params).fetchone()[0])
        rows = conn.execute(
            f"SELECT {', '.join(FIELDS)}, EXISTS(SELECT 1 FROM heatmaps h WHERE h.id = p.id) "
            f"AS has_heatmap FROM predictions p{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
            [*params, per_page, (page - 1) * per_page]).fetchall()
        items = []
        for row in rows:
            rec = self._decode(row)
            rec["has_heatmap"] = bool(row["has_heatmap"])
            items.append(rec)
        return items, total

    def iter_all(self, date_from: str | None = None, date_to: str | None = None
                 ) -> Iterator[dict]:
        """Every record in a date range, oldest first."""
        where, params = self._where(date_from, date_to)
        cur = self._conn().execute(
            f"SELECT {', '.join(FIELDS)} FROM predictions{where} ORDER BY seq", params)
        for row in cur:
            yield self._decode(row)

    def close(self) -> None:
        """Close every connection this store opened (call once, at shutdown)."""
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    pass  # opened in another thread that still owns it
            self._connections.clear()
        self._local = threading.local()
