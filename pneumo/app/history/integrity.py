"""Is the history file whole: read-only checks and the acknowledged-records counter.

The highest record number acknowledged is kept outside the database
(``history.sqlite3.saved``): a file that holds fewer records than were acknowledged (an older
copy put back, the file emptied or replaced) is refused at start-up with what happened in
plain words (`RecordsMissing`), and `pneumo history check` says the same. The checks here only
read the file (`read_only_uri`).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path

from pneumo.app.config import DEFAULTS
from pneumo.app.history.schema import REQUIRED_COLUMNS, utc_now_iso

log = logging.getLogger(__name__)


SAVED_SUFFIX = ".saved"
"""Beside the database: the highest record number (seq) acknowledged, as JSON."""


def saved_path(path: Path) -> Path:
    """The acknowledged-records file of the database at ``path``."""
    return path.with_name(path.name + SAVED_SUFFIX)


def read_saved(path: Path) -> int | None:
    """The highest record number acknowledged for the database at ``path`` (None: unknown)."""
    try:
        return int(json.loads(saved_path(path).read_text(encoding="utf-8"))["seq"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("history %s: %s is unreadable (%s); it is written again",
                    path, saved_path(path).name, exc)
        return None


def write_saved(path: Path, seq: int, record_id: str | None = None) -> None:
    """Record ``seq`` as the highest record number acknowledged (atomic replace)."""
    target = saved_path(path)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"seq": int(seq), "id": record_id, "at": utc_now_iso()}, f)
    os.replace(tmp, target)


def highest_seq(conn: sqlite3.Connection) -> int:
    """The highest record number the database ever gave (purged records count)."""
    row = conn.execute("SELECT name FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
    seq = (conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'predictions'").fetchone()
           if row else None)
    top = conn.execute("SELECT MAX(seq) FROM predictions").fetchone()[0]
    return max(int(seq[0]) if seq else 0, int(top or 0))


def missing_message(path: Path, have: int, saved: int) -> str:
    """The plain words for a history that holds fewer records than were acknowledged."""
    return (f"the history database {path} holds records up to number {have}, but this app "
            f"had saved records up to number {saved}: {saved - have} saved records are "
            "missing from it (an older copy was put back, or the file was emptied, replaced "
            "or lost its recent changes). Put back the newest backup of the history if you have one "
            "(`pneumo history backup` makes them), or, to go on with the records the file "
            "holds, run `pneumo history check --accept-missing` (recorded in the audit table).")


def read_only_uri(path: Path) -> str:
    """An sqlite3 URI that reads ``path`` without changing it (no -wal/-shm made if avoidable)."""
    # A WAL database (made by an older version) is read "immutable" (no -wal/-shm files
    # made) unless a -wal holds recent commits; other files are read with SQLite's locks, so
    # that a lock held by another program is seen as such.
    wal = path.with_name(path.name + "-wal").exists()
    query = "mode=ro&immutable=1" if _wal_header(path) and not wal else "mode=ro"
    return f"{path.resolve().as_uri()}?{query}"


def hot_journal(path: Path) -> bool:
    """Whether a rollback journal beside the file holds an interrupted write."""
    journal = path.with_name(path.name + "-journal")
    try:
        return journal.stat().st_size > 0
    except OSError:
        return False


def _wal_header(path: Path) -> bool:
    """Whether the file's SQLite header says WAL mode (read/write versions 2)."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return False
    return head[:16] == b"SQLite format 3\x00" and head[18:20] == b"\x02\x02"


def file_problem(path: Path, *, full: bool = False,
                 timeout: float = DEFAULTS["history_busy_timeout_s"]) -> str | None:
    """Why an existing, non-empty history file cannot be used (None: it can); read-only.

    The start-up check (``full=False``: quick_check) and ``pneumo history check``
    (``full=True``: integrity_check). Raises sqlite3.DatabaseError if SQLite cannot read it.
    """
    ro = sqlite3.connect(read_only_uri(path), uri=True, timeout=timeout)
    try:
        tables = {r[0] for r in ro.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        cols = ({r[1] for r in ro.execute("PRAGMA table_info(predictions)")}
                if "predictions" in tables else set())
        pragma = "integrity_check(1)" if full else "quick_check(1)"
        ok = ro.execute(f"PRAGMA {pragma}").fetchone()[0] == "ok"
    finally:
        ro.close()
    if not ok:
        return "its pages are damaged"
    if tables and not REQUIRED_COLUMNS <= cols:
        return "it is an SQLite database of another program"
    return None


def missing_records(path: Path) -> tuple[int, int] | None:
    """(records up to, acknowledged up to) when the file lost acknowledged records, else None."""
    saved = read_saved(path)
    if saved is None or not path.is_file() or path.stat().st_size == 0:
        return (0, saved) if saved else None
    ro = sqlite3.connect(read_only_uri(path), uri=True)
    try:
        have = highest_seq(ro)
    finally:
        ro.close()
    return (have, saved) if saved > have else None
