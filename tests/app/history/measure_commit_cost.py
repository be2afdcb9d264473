"""What it costs per upload to have each acknowledged record in the main database file.

Compares, on a real disk folder (default: a temporary folder under the project, never tmpfs),
the time of one history insert (a record with a heatmap blob the size the app stores) with
``synchronous=FULL`` in:

- ``wal``: WAL, the commit is in ``-wal`` only (what the app did before issue 26);
- ``wal+checkpoint``: WAL, then ``PRAGMA wal_checkpoint(TRUNCATE)`` before answering;
- ``delete`` / ``truncate``: a rollback journal (the commit is in the main file).

Usage: python tests/app/history/measure_commit_cost.py [--n 200] [--dir FOLDER]
Prints one line per mode (median and 90th percentile ms per insert) and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from pneumo.app.history.schema import FIELDS, SCHEMA_SQL, new_id, utc_now_iso

MODES = ("wal", "wal+checkpoint", "delete", "truncate")
HEATMAP_BYTES = 60_000  # about what hm.pack stores for one answer


def _record(i: int) -> list:
    rec = dict.fromkeys(FIELDS)
    rec.update(id=new_id(), created_at=utc_now_iso(), sha256=f"{i:064x}", label="NORMAL",
               probability=0.1, threshold=0.5, mode="screening", model_version="1",
               warnings="[]", outcome="no_signs")
    return [rec[k] for k in FIELDS]


def measure(mode: str, folder: Path, n: int) -> list[float]:
    """Milliseconds per committed insert (record + heatmap) in one journal mode."""
    path = folder / f"history-{mode.replace('+', '-')}.sqlite3"
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={'wal' if mode.startswith('wal') else mode}")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA_SQL)
    blob = os.urandom(HEATMAP_BYTES)
    insert = (f"INSERT INTO predictions ({', '.join(FIELDS)}) "
              f"VALUES ({', '.join('?' * len(FIELDS))})")
    times = []
    for i in range(n):
        row = _record(i)
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert, row)
        conn.execute("INSERT INTO heatmaps(id, png) VALUES (?, ?)", (row[0], blob))
        conn.execute("COMMIT")
        if mode == "wal+checkpoint":
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            assert busy == 0
        times.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return times


def main() -> None:
    """Measure every mode and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="inserts per mode")
    ap.add_argument("--dir", type=Path, default=None, help="folder on the disk to measure")
    args = ap.parse_args()
    base = args.dir or Path(__file__).resolve().parents[3]
    with tempfile.TemporaryDirectory(dir=base, prefix=".commit-cost-") as tmp:
        summary = {}
        for mode in MODES:
            t = sorted(measure(mode, Path(tmp), args.n))
            summary[mode] = {"median_ms": round(statistics.median(t), 2),
                             "p90_ms": round(t[int(0.9 * len(t))], 2)}
            print(f"{mode:15s} median {summary[mode]['median_ms']:7.2f} ms   "
                  f"p90 {summary[mode]['p90_ms']:7.2f} ms   (n={args.n}, {tmp})")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
