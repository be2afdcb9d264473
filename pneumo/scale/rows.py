"""One row per file: the schema, the pipeline version, the resume key, pseudonymised paths.

Standard library only (pyarrow is imported by `arrow_schema` alone). A row is a plain dict
with exactly `ROW_FIELDS`; both engines make the same rows for the same files, apart from
`VOLATILE_FIELDS` (timings and the time of scoring).
"""

from __future__ import annotations

import hashlib
import hmac
from functools import cache
from pathlib import Path

import pneumo

STATUSES = ("scored", "refused", "failed")
"""scored: the model judged it; refused: not what the model is for (not a frontal chest X-ray,
a lateral view, another body part, an adult); failed: the file cannot be read or decoded."""

# (name, arrow type) in the order of the CSV's columns
_SCHEMA = (
    ("path", "string"),  # the file (or its pseudonym: --pseudonymise)
    ("size", "int64"),  # bytes (-1: the file could not be stat'ed)
    ("mtime_ns", "int64"),
    ("file_sha256", "string"),  # of the file's bytes (keyed hash with --pseudonymise)
    ("status", "string"),  # STATUSES
    ("code", "string"),  # refused/failed: the most specific code (lateral_view, ...)
    ("reasons", "string"),  # every reason code, ";"-separated
    ("message", "string"),  # the app's English words for a refusal or failure
    ("outcome", "string"),  # pneumonia | review | no_signs (pneumo.app.pipeline.outcome)
    ("label", "string"),  # NORMAL | PNEUMONIA at `mode`
    ("probability", "float64"),  # calibrated, as the app gives it (6 decimals)
    ("threshold", "float64"),
    ("mode", "string"),
    ("confidence", "string"),
    ("calibrated", "bool_"),
    ("ood_distance", "float64"),
    ("warnings", "string"),  # quality warning codes, ";"-separated
    ("format", "string"),
    ("width", "int64"),
    ("height", "int64"),
    ("bit_depth", "int64"),
    ("model_name", "string"),
    ("model_version", "string"),
    ("model_sha256", "string"),
    ("pipeline_version", "string"),
    ("ms_decode", "float64"),
    ("ms_checks", "float64"),
    ("ms_model", "float64"),  # preprocessing, ONNX Runtime, orientation, OOD and outcome
    ("ms_total", "float64"),  # the whole file, reading included
    ("scored_at", "string"),  # UTC, ISO 8601
)
ROW_FIELDS: tuple[str, ...] = tuple(name for name, _ in _SCHEMA)
VOLATILE_FIELDS = ("ms_decode", "ms_checks", "ms_model", "ms_total", "scored_at")
"""Fields that differ between two runs over the same files (excluded when rows are compared)."""
KEY_FIELDS = ("path", "size", "mtime_ns", "model_sha256", "pipeline_version")
"""A file already scored by this model and pipeline (--verify adds file_sha256)."""
RETRIED_CODES = frozenset({"unreadable_file", "internal_error"})
"""Failures that may pass on a rerun (a share that was away, a bug since fixed): not skipped."""
PIPELINE_SOURCES = ("app/pipeline", "scale/score.py", "scale/rows.py")
"""What decides a row besides the model (the pipeline version is a digest of these files)."""


@cache
def pipeline_version() -> str:
    """The pneumo version plus a digest of the pipeline's source (rows of another are rescored)."""
    root = Path(pneumo.__file__).resolve().parent
    digest = hashlib.sha256()
    for rel in PIPELINE_SOURCES:
        where = root / rel
        for path in sorted(where.rglob("*.py")) if where.is_dir() else [where]:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return f"{pneumo.__version__}+{digest.hexdigest()[:12]}"


def empty_row() -> dict:
    """A row with every field None."""
    return dict.fromkeys(ROW_FIELDS)


def row_key(row: dict, *, verify: bool = False) -> tuple:
    """The resume and de-duplication key of a row (or of a file about to be scored)."""
    key = tuple(row[k] for k in KEY_FIELDS)
    return (*key, row.get("file_sha256")) if verify else key


def comparable(row: dict) -> dict:
    """A row without its volatile fields (what must be equal between engines and runs)."""
    return {k: v for k, v in row.items() if k not in VOLATILE_FIELDS}


def arrow_schema():
    """The rows' pyarrow schema (imports pyarrow)."""
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in _SCHEMA])


def rows_table(rows: list[dict]):
    """Rows as a pyarrow Table with the fixed schema (None stays null)."""
    import pyarrow as pa

    return pa.Table.from_pylist([{k: r.get(k) for k in ROW_FIELDS} for r in rows],
                                schema=arrow_schema())


class Pseudonymiser:
    """Keyed hashes (HMAC-SHA256) for paths and file digests: stable for one key, not
    reversible without it (a guessed path or a file found elsewhere cannot be matched)."""

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise ValueError("a pseudonymisation key needs at least 16 bytes")
        self.key = key

    def _mac(self, text: str) -> str:
        return hmac.new(self.key, text.encode("utf-8", "surrogateescape"),
                        hashlib.sha256).hexdigest()

    def path(self, path: str) -> str:
        """The pseudonym of a path."""
        return "p-" + self._mac("path:" + path)[:32]

    def digest(self, sha256: str | None) -> str | None:
        """The keyed form of a file's sha256 (None stays None)."""
        return None if sha256 is None else "h-" + self._mac("sha256:" + sha256)

    def row(self, row: dict) -> dict:
        """The row with its path and file digest pseudonymised."""
        return {**row, "path": self.path(row["path"]),
                "file_sha256": self.digest(row.get("file_sha256"))}
