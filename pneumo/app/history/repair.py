"""`pneumo history check` and `pneumo history repair`: judge and salvage history.sqlite3.

check reads the file only (integrity_check and the start-up schema check). repair first
copies the file (and its -wal) to a timestamped backup beside it, then copies every row
SQLite can still read from the known tables into a fresh database made by HistoryStore
(the current schema), and swaps it in atomically. Stop the server before repairing.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pneumo.app.history.integrity import (
    SAVED_SUFFIX,
    file_problem,
    missing_message,
    missing_records,
    read_only_uri,
    saved_path,
    write_saved,
)
from pneumo.app.history.store import HistoryStore

log = logging.getLogger(__name__)

TABLES = ("predictions", "heatmaps", "images", "meta", "audit", "refusals")
"""The tables salvaged, parents first (heatmaps and images refer to predictions)."""

PROBE_MARGIN = 10_000
"""Row ids probed past the last one seen when the table's highest id cannot be read."""


def accept_missing(path: Path, *, by: str | None = None, why: str = "accepted") -> int | None:
    """Go on with the records the file holds: audit the loss, record the file's highest number.

    Returns how many acknowledged records were missing (None when none were)."""
    gap = missing_records(path)
    if gap is None:
        return None
    have, saved = gap
    store = HistoryStore(path, check_saved=False)  # opened without the check it would fail
    try:
        store.add_audit("missing_records_accepted", {"saved_up_to": saved},
                        {"file_up_to": have, "missing": saved - have, "why": why}, by=by)
        write_saved(path, have)
    finally:
        store.close()
    log.warning("history %s: %d missing acknowledged records accepted (%s)", path,
                saved - have, why)
    return saved - have


@dataclass
class CheckResult:
    """The verdict on one history file."""

    path: Path
    ok: bool
    message: str


@dataclass
class RepairResult:
    """What a repair did: the backup, and the rows kept and lost per table."""

    path: Path
    backup: Path
    recovered: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int | None] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    missing: int | None = None  # acknowledged records the repaired file no longer holds


def check(path: Path) -> CheckResult:
    """Judge the history file at ``path`` without changing it."""
    if not path.exists() or path.stat().st_size == 0:
        gap = missing_records(path)
        if gap is not None:
            return CheckResult(path, False, "records missing: " + missing_message(path, *gap))
    if not path.exists():
        return CheckResult(path, True, f"no history at {path} (a new one is created at start)")
    if path.stat().st_size == 0:
        return CheckResult(path, True, f"{path} is empty (the schema is created at start)")
    try:
        why = file_problem(path, full=True)
        if why is None:
            ro = sqlite3.connect(read_only_uri(path), uri=True)
            try:
                n = ro.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
            finally:
                ro.close()
    except sqlite3.DatabaseError as exc:
        why = f"it is damaged or not a database ({exc})"
    if why:
        if _journal(path).exists() and "readonly" in why.replace("-", "").replace(" ", ""):
            return CheckResult(path, False, f"{path}: a write was interrupted (its -journal "
                                            "file is beside it). Start the app once (SQLite "
                                            "finishes it), then check again.")
        return CheckResult(path, False, f"damaged: {path}: {why}. Run `pneumo history repair` "
                                        "(it keeps a backup of the file).")
    gap = missing_records(path)
    if gap is not None:
        return CheckResult(path, False, "records missing: " + missing_message(path, *gap))
    return CheckResult(path, True, f"ok: {path} ({n} records)")


def _journal(path: Path) -> Path:
    return path.with_name(path.name + "-journal")


def _backup(path: Path) -> Path:
    """Copy ``path`` (and its -wal) to a new timestamped name beside it; returns the copy."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    n = 0
    while True:
        backup = path.with_name(f"{path.name}.damaged-{stamp}" + (f"-{n}" if n else ""))
        try:
            fd = os.open(backup, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            break
        except FileExistsError:
            n += 1
    with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
        shutil.copyfileobj(src, out)
        out.flush()
        os.fsync(out.fileno())
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, backup.with_name(backup.name + "-wal"))
    return backup


def _columns(src: sqlite3.Connection, dst: sqlite3.Connection, table: str) -> list[str]:
    """Columns of ``table`` present in both databases (an older schema lacks some)."""
    have = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
    want = {r[1] for r in dst.execute(f"PRAGMA table_info({table})")}
    return [c for c in have if c in want]


def _upper_rowid(src: sqlite3.Connection, table: str) -> int | None:
    """The table's highest row id, if SQLite can still tell."""
    for sql, args in (("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)),
                      (f"SELECT MAX(rowid) FROM {table}", ())):
        try:
            row = src.execute(sql, args).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row and row[0] is not None:
            return int(row[0])
    return None


def _rows(src: sqlite3.Connection, table: str, cols: list[str],
          lost: list[int | None]) -> Iterator[tuple]:
    """Every readable row of ``table``: a plain scan, else row id by row id (unreadable: lost).

    ``lost[0]`` counts the row ids up to the table's known highest one that could not be
    read; it becomes None when that highest id is unknown (then ids are probed a bit past
    the last one seen, and the loss cannot be counted).
    """
    select = f"SELECT rowid, {', '.join(cols)} FROM {table}"
    last = 0
    try:
        for row in src.execute(f"{select} ORDER BY rowid"):
            last = row[0]
            yield row[1:]
        return
    except sqlite3.DatabaseError as exc:
        log.warning("history repair: %s: scan stopped after row %d (%s); probing row by row",
                    table, last, exc)
    upper = _upper_rowid(src, table)
    if upper is None:
        upper, lost[0] = last + PROBE_MARGIN, None
    for rowid in range(last + 1, upper + 1):
        try:
            row = src.execute(f"{select} WHERE rowid = ?", (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            if lost[0] is not None:
                lost[0] += 1
            continue
        if row is not None:
            yield row[1:]


def _salvage(src_path: Path, dst: sqlite3.Connection, result: RepairResult) -> None:
    """Copy what SQLite can read from ``src_path`` into ``dst``, table by table."""
    try:
        src = sqlite3.connect(read_only_uri(src_path), uri=True)
    except sqlite3.DatabaseError:
        result.unreadable.extend(TABLES)
        return
    try:
        # Read-only: lets SQLite read a file shorter than its header says (truncated).
        src.execute("PRAGMA writable_schema=ON")
        for table in TABLES:
            try:
                cols = _columns(src, dst, table)
            except sqlite3.DatabaseError:
                cols = []
            if (table == "predictions" and "id" not in cols) or not cols:
                result.unreadable.append(table)
                continue
            lost: list[int | None] = [0]
            kept = 0
            insert = (f"INSERT OR IGNORE INTO {table} ({', '.join(cols)}) "
                      f"VALUES ({', '.join('?' * len(cols))})")
            for row in _rows(src, table, cols, lost):
                try:
                    cur = dst.execute(insert, row)
                except sqlite3.DatabaseError:  # NOT NULL, foreign key: unusable
                    lost[0] = None if lost[0] is None else lost[0] + 1
                    continue
                kept += cur.rowcount > 0
            result.recovered[table], result.lost[table] = kept, lost[0]
    finally:
        src.close()


def repair(path: Path) -> RepairResult:
    """Back ``path`` up, salvage its readable rows into a fresh history, swap it in."""
    backup = _backup(path)
    result = RepairResult(path, backup)
    tmp = path.with_name(path.name + ".repairing")
    for leftover in (tmp, *(tmp.with_name(tmp.name + side)
                            for side in ("-wal", "-shm", "-journal", SAVED_SUFFIX))):
        leftover.unlink(missing_ok=True)
    HistoryStore(tmp).close()  # the current schema, made by the app itself
    saved_path(tmp).unlink(missing_ok=True)
    dst = sqlite3.connect(tmp)
    try:
        dst.execute("PRAGMA foreign_keys=ON")
        with dst:
            _salvage(backup, dst, result)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file to move
    finally:
        dst.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    for side in ("-wal", "-shm"):  # stale: they belong to the old file (the -wal is backed up)
        path.with_name(path.name + side).unlink(missing_ok=True)
    os.replace(tmp, path)
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        dir_fd = None  # Windows: no directory fsync
    if dir_fd is not None:
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    # The rows lost are counted above; the app starts with what was salvaged.
    result.missing = accept_missing(path, why="pneumo history repair")
    return result
