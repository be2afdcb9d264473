"""What a history record is: the database schema and its migrations' columns, the record
fields (CSV order), ids, findings, and the UTC times and date bounds records are stored and
queried with.

Schema 2 added ``confidence`` ("clear" | "borderline"); schema 3 the uploaded file's name
(``file_name``), ``bit_depth``, and whether the probability was calibrated (``calibrated``,
``calibrated_on``); schema 4 where the image came from (``source``: "upload", "dicom";
``study_uid``/``sop_uid`` for DICOM, unique per SOPInstanceUID), which thresholds the answer
used (``threshold_source``: "model" | "site") and the clinician's confirmed finding
(``finding``, ``finding_note``, ``finding_by``, ``finding_at``), with every change kept in the
append-only ``audit`` table; schema 5 what the answer showed (``outcome``: "pneumonia" |
"review" | "no_signs", pneumo.app.pipeline.outcome), whether the drift check warned then
(``drift``) and when this clinic's thresholds in use were set (``site_thresholds_at``): old
records get their outcome from their ``confidence`` and ``label`` on open, by the same rule;
schema 6 the orientation verdict (``orientation``, JSON, with ``turned`` when the image was
turned before analysis).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta

DB_NAME = "history.sqlite3"
SCHEMA_VERSION = 6


SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS predictions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    patient_ref TEXT,
    label TEXT NOT NULL,
    probability REAL NOT NULL,
    threshold REAL NOT NULL,
    mode TEXT NOT NULL,
    confidence TEXT DEFAULT NULL,
    model_name TEXT,
    model_version TEXT NOT NULL,
    model_sha256 TEXT,
    width INTEGER,
    height INTEGER,
    format TEXT,
    ood_distance REAL,
    warnings TEXT NOT NULL DEFAULT '[]',
    message TEXT,
    file_name TEXT DEFAULT NULL,
    bit_depth INTEGER DEFAULT NULL,
    calibrated INTEGER DEFAULT NULL,
    calibrated_on TEXT DEFAULT NULL,
    source TEXT DEFAULT NULL,
    study_uid TEXT DEFAULT NULL,
    sop_uid TEXT DEFAULT NULL,
    threshold_source TEXT DEFAULT NULL,
    finding TEXT DEFAULT NULL,
    finding_note TEXT DEFAULT NULL,
    finding_by TEXT DEFAULT NULL,
    finding_at TEXT DEFAULT NULL,
    outcome TEXT DEFAULT NULL,
    drift INTEGER DEFAULT NULL,
    site_thresholds_at TEXT DEFAULT NULL,
    orientation TEXT DEFAULT NULL
);
CREATE INDEX IF NOT EXISTS predictions_created ON predictions(created_at);
CREATE TABLE IF NOT EXISTS heatmaps (
    id TEXT PRIMARY KEY REFERENCES predictions(id) ON DELETE CASCADE,
    png BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY REFERENCES predictions(id) ON DELETE CASCADE,
    format TEXT,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    record_id TEXT,
    old TEXT,
    new TEXT,
    by TEXT
);
CREATE TABLE IF NOT EXISTS refusals (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    codes TEXT NOT NULL,
    source TEXT
);
"""
INDEXES_SQL = """
CREATE UNIQUE INDEX IF NOT EXISTS predictions_sop ON predictions(sop_uid)
    WHERE sop_uid IS NOT NULL;
"""
"""Indexes on columns added after schema 1 (made after the migration adds the columns)."""

FIELDS = ("id", "created_at", "file_name", "sha256", "patient_ref", "outcome", "label",
          "probability",
          "calibrated", "calibrated_on", "threshold", "mode", "confidence", "model_name",
          "model_version", "model_sha256", "width", "height", "format", "bit_depth",
          "ood_distance", "warnings", "message", "threshold_source", "source", "study_uid",
          "sop_uid", "finding", "finding_note", "finding_by", "finding_at", "drift",
          "site_thresholds_at", "orientation")
"""Columns of a history record, in CSV order."""

ADDED_COLUMNS = {
    "confidence": "TEXT DEFAULT NULL",  # schema 2
    "file_name": "TEXT DEFAULT NULL",  # schema 3
    "bit_depth": "INTEGER DEFAULT NULL",
    "calibrated": "INTEGER DEFAULT NULL",
    "calibrated_on": "TEXT DEFAULT NULL",
    "source": "TEXT DEFAULT NULL",  # schema 4
    "study_uid": "TEXT DEFAULT NULL",
    "sop_uid": "TEXT DEFAULT NULL",
    "threshold_source": "TEXT DEFAULT NULL",
    "finding": "TEXT DEFAULT NULL",
    "finding_note": "TEXT DEFAULT NULL",
    "finding_by": "TEXT DEFAULT NULL",
    "finding_at": "TEXT DEFAULT NULL",
    "outcome": "TEXT DEFAULT NULL",  # schema 5
    "drift": "INTEGER DEFAULT NULL",
    "site_thresholds_at": "TEXT DEFAULT NULL",
    "orientation": "TEXT DEFAULT NULL",  # schema 6: the orientation heads' verdict (JSON)
}
"""Columns added after schema 1: name -> SQL type and default, added to old databases."""


FINDINGS = ("normal", "pneumonia", "other", "unknown")
"""The clinician's confirmed findings a record can carry."""

AUDIT_FIELDS = ("seq", "at", "action", "record_id", "old", "new", "by")
"""Columns of an audit row (append-only: confirmations and calibration changes)."""

REQUIRED_COLUMNS = frozenset({"seq", "id", "created_at", "sha256", "label", "probability",
                               "threshold", "mode", "model_version"})
"""Columns every pneumo history (schema 1 on) has: a predictions table without them is foreign."""


def utc_now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds and a Z suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_bound(value: str | None, *, end: bool) -> str | None:
    """A from/to filter (date or datetime, UTC if naive) as a comparable ISO string.

    A bare date as ``to`` includes that whole day. Raises ValueError on bad input.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) == 10:
        d = date.fromisoformat(value)
        dt = datetime(d.year, d.month, d.day, tzinfo=UTC)
    else:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt
    try:
        if len(value) == 10 and end:
            dt += timedelta(days=1)
        dt = dt.astimezone(UTC)
    except OverflowError:  # past 9999-12-31 or before 0001-01-01 in UTC: clamp
        return MAX_BOUND if dt.year > 5000 else MIN_BOUND
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


MIN_BOUND = "0000"
"""Sorts before every stored ``created_at``: a ``from`` before year 1 (UTC) means no bound."""
MAX_BOUND = "9999-99"
"""Sorts after every stored ``created_at``: a ``to`` past year 9999 (UTC) means no bound."""


RECORD_ID = re.compile(r"^[0-9a-f]{32}$")
"""What a record id looks like (new_id); anything else is not looked up."""


def new_id() -> str:
    """A fresh random record id."""
    return uuid.uuid4().hex


def is_record_id(text: str) -> bool:
    """True when ``text`` has the form of a record id."""
    return bool(RECORD_ID.match(text))
