"""What can go wrong with the history file, told apart: damaged or foreign, full, in use.

A database locked by another program is "in use" (`StorageBusy`), never "damaged"; a write
that finds the disk full is `StorageFull`; `raise_storage_error` turns a failed sqlite3/OS
write into the one of these it means, with the log line a clinic's IT can act on.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)


class StorageError(Exception):
    """The history cannot be used (damaged or foreign file, unusable folder, disk full)."""


class StorageFull(StorageError):
    """A write failed because the disk (or the database's size limit) is full."""


class StorageBusy(StorageError):
    """Another program holds the history locked right now (trying again later may work)."""


class RecordsMissing(StorageError):
    """The database file holds fewer records than this app acknowledged."""


BUSY_CODES = (5, 6)
"""SQLITE_BUSY and SQLITE_LOCKED (primary result codes)."""


IN_USE_ADVICE = ("Another program is holding it open: usually a backup or file-sync tool "
                 "(OneDrive, Dropbox, Google Drive, a backup job), an antivirus scan, or a "
                 "second copy of this app. Close that program or wait for it to finish, then "
                 "try again. Do not move or delete the file: it is not damaged.")
"""What to do when the history is locked (start-up and the log)."""


def is_busy(exc: BaseException) -> bool:
    """Whether an error (StorageBusy, or an sqlite3 one) means that another program holds a lock."""
    if isinstance(exc, StorageBusy):
        return True
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in BUSY_CODES
    text = str(exc)
    return "database is locked" in text or "database table is locked" in text


def is_disk_full(exc: BaseException) -> bool:
    """Whether an sqlite3/OS error means that no space is left."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code == getattr(sqlite3, "SQLITE_FULL", 13):
        return True
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return "disk is full" in str(exc) or "No space left" in str(exc)


def raise_storage_error(exc: BaseException, path: Path) -> None:
    """Raise the StorageFull / StorageBusy a failed write means (returns when neither)."""
    if is_disk_full(exc):
        log.error("history %s: disk full, the change was not saved (%s)", path, exc)
        raise StorageFull(f"no space left for {path}") from exc
    if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
        log.warning("history %s is in use by another program; the change was not saved. %s",
                    path, IN_USE_ADVICE)
        raise StorageBusy(f"the history {path} is in use by another program") from exc
