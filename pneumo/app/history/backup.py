"""`pneumo history backup` and retention: consistent copies of the history while serving,
and the periodic purge of `pneumo serve --retain-days N`.

The copy uses SQLite's online backup API in one step: under WAL it reads one snapshot while
the server goes on writing, so the copy holds exactly the records committed before it began.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

log = logging.getLogger(__name__)

COUNTED_TABLES = ("predictions", "heatmaps", "images", "audit", "refusals")
RETENTION_EVERY_S = 3600.0
"""How often `--retain-days` purges while serving (and once at start-up)."""


def table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows per history table of an open database."""
    return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in COUNTED_TABLES}


def backup_history(db: str | Path, out: str | Path) -> dict[str, int]:
    """Copy a (possibly live) history database to ``out`` (0600), checked; rows per table."""
    db, out = Path(db), Path(out)
    if not db.is_file():
        raise FileNotFoundError(f"no history database at {db}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    tmp.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))  # patient data
    src = sqlite3.connect(db, timeout=30.0)
    dst = sqlite3.connect(tmp)
    try:
        src.execute("PRAGMA busy_timeout=30000")
        src.backup(dst)  # pages=-1: the whole database from one read snapshot
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal
        ok = dst.execute("PRAGMA integrity_check(1)").fetchone()[0]
        if ok != "ok":
            raise sqlite3.DatabaseError(f"the copy failed its integrity check: {ok}")
        counts = table_counts(dst)
    except BaseException:
        dst.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    dst.close()
    os.replace(tmp, out)
    log.info("history %s backed up to %s: %s", db, out, counts)
    return counts


def retention_cutoff(days: int, now: datetime | None = None) -> str:
    """The ISO UTC time before which records are purged under ``--retain-days days``."""
    now = now or datetime.now(UTC)
    return (now - timedelta(days=int(days))).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class RetentionThread(threading.Thread):
    """Purges records older than ``days`` at start and every ``every_s`` until stopped."""

    def __init__(self, store, days: int, every_s: float = RETENTION_EVERY_S):
        super().__init__(name="pneumo-retention", daemon=True)
        self.store, self.days, self.every_s = store, int(days), float(every_s)
        self.stopped = threading.Event()
        self.runs = 0

    def run(self) -> None:
        """Purge, then wait; errors are logged and retried at the next turn."""
        while not self.stopped.is_set():
            try:
                self.store.purge(retention_cutoff(self.days), by=f"retain-days {self.days}")
            except Exception:  # noqa: BLE001 - retention must not stop the app
                log.exception("retention purge failed (tried again in %.0f s)", self.every_s)
            self.runs += 1
            self.stopped.wait(self.every_s)

    def stop(self) -> None:
        """Ask the thread to end (it ends at once if it is waiting)."""
        self.stopped.set()
