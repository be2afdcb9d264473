"""Where the rows go: Parquet shards (the resume state), a CSV and a one-screen summary.

An output folder holds ``shards/part-RUN-NNNNN.parquet`` (written as the rows come, each one
atomically: a killed job loses at most the rows not yet flushed), ``summary.json`` and, unless
``--csv`` names another file, ``predictions.csv``. A row is written once per key
(`rows.row_key`): a task Ray ran twice, or a file listed twice, gives one row.
"""

from __future__ import annotations

import csv
import logging
import os
import time
import uuid
from collections import Counter
from pathlib import Path

from pneumo.scale.rows import KEY_FIELDS, RETRIED_CODES, ROW_FIELDS, row_key, rows_table

SHARD_DIR = "shards"
CSV_NAME = "predictions.csv"
SUMMARY_NAME = "summary.json"
SHARD_ROWS = 2000
"""Rows per shard (also flushed every SHARD_SECONDS)."""
SHARD_SECONDS = 30.0

log = logging.getLogger(__name__)


def run_id() -> str:
    """A run's shard prefix: UTC time to the nanosecond first, so that shard names sort in the
    order the runs started (`ArchiveStore.current` takes the newest row from that order, and
    two runs often start within one second), then the process and a random part (unique)."""
    ns = time.time_ns()
    return (time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 1_000_000_000))
            + f".{ns % 1_000_000_000:09d}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


class ArchiveStore:
    """The shards of one output folder: what was scored, and new rows written once each."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.shards = self.folder / SHARD_DIR
        self.run_id = run_id()
        self._buffer: list[dict] = []
        self._seen: set[tuple] = set()
        self._count = 0
        self._flushed_at = time.monotonic()
        self.written = 0

    def _table(self, columns: list[str] | None = None):
        """Every shard as one pyarrow Table, oldest shard first (None: no shard yet)."""
        files = sorted(self.shards.glob("part-*.parquet")) if self.shards.is_dir() else []
        if not files:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])

    def rows(self) -> list[dict]:
        """Every row of every shard, oldest shard first (small stores: tests, tools)."""
        table = self._table()
        return [] if table is None else table.to_pylist()

    def done(self, model_sha256: str, pipeline: str, *, verify: bool) -> set[tuple]:
        """Keys of the files this model and pipeline have scored (retried failures left out);
        reads only the key columns."""
        table = self._table([*KEY_FIELDS, "file_sha256", "status", "code"])
        if table is None:
            return set()
        cols = {name: table.column(name).to_pylist() for name in table.column_names}
        keys = set()
        for i in range(table.num_rows):
            full = (*(cols[k][i] for k in KEY_FIELDS), cols["file_sha256"][i])
            self._seen.add(full)
            ours = (cols["model_sha256"][i], cols["pipeline_version"][i]) == (model_sha256,
                                                                              pipeline)
            if ours and not (cols["status"][i] == "failed" and cols["code"][i] in RETRIED_CODES):
                keys.add(full if verify else full[:-1])
        return keys

    def add(self, row: dict) -> bool:
        """Buffer a row for the next shard; False when its key was written already."""
        key = row_key(row, verify=True)
        if key in self._seen:
            return False
        self._seen.add(key)
        self._buffer.append(row)
        if (len(self._buffer) >= SHARD_ROWS
                or time.monotonic() - self._flushed_at >= SHARD_SECONDS):
            self.flush()
        return True

    def flush(self) -> None:
        """Write the buffered rows as one shard (atomically)."""
        self._flushed_at = time.monotonic()
        if not self._buffer:
            return
        import pyarrow.parquet as pq

        self.shards.mkdir(parents=True, exist_ok=True)
        name = f"part-{self.run_id}-{self._count:05d}.parquet"
        tmp = self.shards / f".{name}.tmp"
        pq.write_table(rows_table(self._buffer), tmp)
        os.replace(tmp, self.shards / name)
        self._count += 1
        self.written += len(self._buffer)
        self._buffer = []

    def current(self, model_sha256: str, pipeline: str):
        """This model's and pipeline's rows as a pyarrow Table: one per path (the newest),
        sorted by path."""
        import pyarrow as pa
        import pyarrow.compute as pc

        table = self._table()
        if table is None:
            return rows_table([])
        table = table.filter(pc.and_(pc.equal(table["model_sha256"], model_sha256),
                                     pc.equal(table["pipeline_version"], pipeline)))
        order = table.append_column("_n", pa.array(range(table.num_rows), pa.int64()))
        newest = order.group_by("path").aggregate([("_n", "max")])["_n_max"]
        return table.take(newest).sort_by("path")


def write_csv(path: str | Path, table) -> None:
    """A rows Table as CSV (UTF-8 with a byte-order mark, as `pneumo predict --csv`), written
    a batch at a time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8-sig") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_FIELDS)
        writer.writeheader()
        for batch in table.to_batches(max_chunksize=10_000):
            writer.writerows({k: ("" if v is None else v) for k, v in r.items()}
                             for r in batch.to_pylist())
    os.replace(tmp, path)


class Tally:
    """What a run scored, counted as the rows come (the rows themselves are not kept)."""

    def __init__(self) -> None:
        self.files = 0
        self.counts = {k: Counter() for k in ("status", "outcome", "refused", "failed")}
        self.ms = Counter()
        self.scored = 0

    def add(self, row: dict) -> None:
        """Count one row."""
        self.files += 1
        self.counts["status"][row["status"]] += 1
        if row["outcome"] is not None:
            self.counts["outcome"][row["outcome"]] += 1
        if row["status"] in ("refused", "failed"):
            self.counts[row["status"]][row["code"]] += 1
        if row["status"] == "scored":
            self.scored += 1
            for k in ("ms_decode", "ms_checks", "ms_model", "ms_total"):
                self.ms[k] += row[k] or 0.0


def table_counts(table, field: str) -> dict:
    """Counts of a column's values (nulls left out), most common first."""
    return dict(Counter(v for v in table.column(field).to_pylist() if v is not None
                        ).most_common())


def summarise(new: Tally, *, total, skipped: int, seconds: float, engine: str,
              workers: int | None) -> dict:
    """What a run did: counts per status, outcome and code, images/s, where the time went;
    ``total``: the Table of every file's current row."""
    mean = {k: round(new.ms[k] / new.scored, 2) if new.scored else None
            for k in ("ms_decode", "ms_checks", "ms_model", "ms_total")}
    return {
        "engine": engine, "workers": workers, "files_this_run": new.files,
        "skipped_already_scored": skipped, "seconds": round(seconds, 2),
        "images_per_s": round(new.files / seconds, 2) if seconds > 0 and new.files else None,
        **{k: dict(c.most_common()) for k, c in new.counts.items()},
        "mean_ms_per_scored_file": mean,
        "all_runs": {"files": total.num_rows, "status": table_counts(total, "status"),
                     "outcome": table_counts(total, "outcome")},
    }


def format_summary(s: dict, *, model: str, where: str) -> str:
    """The summary as a screenful of text."""
    def line(name: str, d: dict) -> str:
        return f"  {name:<9}" + (", ".join(f"{k} {v}" for k, v in d.items()) or "none")

    ms = s["mean_ms_per_scored_file"]
    lines = [
        f"pneumo predict --engine {s['engine']}: {s['files_this_run']} files scored in "
        f"{s['seconds']} s ({s['images_per_s'] or 0} images/s"
        + (f", {s['workers']} worker(s)" if s["workers"] else "") + "); "
        f"{s['skipped_already_scored']} skipped (already scored)",
        line("status", s["status"]), line("outcome", s["outcome"]),
        line("refused", s["refused"]), line("failed", s["failed"]),
        (f"  per file  decode {ms['ms_decode']} ms, checks {ms['ms_checks']} ms, model "
         f"{ms['ms_model']} ms, total {ms['ms_total']} ms (mean over scored files)"
         if ms["ms_total"] is not None else "  per file  nothing scored in this run"),
        f"  all runs  {s['all_runs']['files']} files: " + ", ".join(
            f"{k} {v}" for k, v in {**s['all_runs']['status'],
                                    **s['all_runs']['outcome']}.items()),
        f"  model     {model}",
        f"  output    {where}",
    ]
    return "\n".join(lines)
