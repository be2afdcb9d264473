"""A real SQLite lock held by another process: what a backup, sync or antivirus tool does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""
"""Another program (a sync tool, an antivirus): holds an exclusive SQLite lock until told."""


class Locker:
    """A second process holding ``path`` locked (BEGIN EXCLUSIVE) until released."""

    def __init__(self, path: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        """Commit and exit."""
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
