"""The one logging setup, called by the entry points only.

`pneumo` (pneumo/cli.py), `python -m pneumo.app` (pneumo/app/runtime/cli.py) and the `pneumo-edge`
executable (installer/entry.py) call `setup_logging` once at start; every module logs
through ``logging.getLogger(__name__)`` and never configures logging itself. Standard
library only, so the command line stays fast to start.

Without a console (the windowed Windows program, the macOS app, or ``--log-file``) the
executable calls `setup_file_logging` instead: the log, and everything printed, goes to a
rotating file (`LOG_MAX_BYTES` x `LOG_BACKUPS` old files), and printing never fails.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_MAX_BYTES = 1_000_000
"""Size at which the log file is rotated (pneumo-edge.log -> .log.1 ... .log.3)."""
LOG_BACKUPS = 3
"""How many rotated log files are kept besides the current one."""


def setup_logging(level: int = logging.INFO) -> None:
    """INFO and above to stderr (progress of training, export and benchmarks; server logs).

    Does nothing when logging is configured already (an embedding program, pytest).
    """
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)


class LogWriter:
    """A text stream that turns each written line into a log record (for print without a console).

    Stands in for sys.stdout / sys.stderr when there is no console: ``print`` keeps working and
    its lines land in the log file, in order with the log records. Partial lines wait for
    their newline (or flush). Never raises: a failing handler must not stop the app.
    """

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, logger: logging.Logger, level: int):
        self.logger = logger
        self.level = level
        self._buffer = ""
        self._lock = threading.RLock()
        self._busy = threading.local()  # a handler error printed to stderr must not loop

    def write(self, text: str) -> int:
        """Buffer text; log every complete line."""
        if not isinstance(text, str):
            text = str(text)
        with self._lock:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def writelines(self, lines) -> None:
        """Write each string in turn."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Log a pending partial line."""
        with self._lock:
            rest, self._buffer = self._buffer, ""
        if rest:
            self._emit(rest)

    def _emit(self, line: str) -> None:
        line = line.rstrip("\r")
        if not line.strip() or getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            self.logger.log(self.level, "%s", line)
        except Exception:  # noqa: BLE001 - printing must never fail
            pass
        finally:
            self._busy.on = False

    def isatty(self) -> bool:
        """Not a terminal."""
        return False

    def writable(self) -> bool:
        """Always writable."""
        return True

    def readable(self) -> bool:
        """Not readable."""
        return False

    def fileno(self) -> int:
        """No file descriptor (like io.StringIO): raises OSError."""
        raise io.UnsupportedOperation("LogWriter has no file descriptor")

    def close(self) -> None:
        """Flush; the stream stays usable (the log file belongs to the logging handler)."""
        self.flush()

    @property
    def closed(self) -> bool:
        """Never closed."""
        return False


def setup_file_logging(path: str | Path, level: int = logging.INFO, *,
                       capture_output: bool = True) -> logging.Handler:
    """Log to a rotating file (created with its folder) and, if asked, send print output there.

    With ``capture_output`` sys.stdout and sys.stderr become `LogWriter` streams (loggers
    ``stdout`` at INFO and ``stderr`` at WARNING), so the start-up lines, errors and
    tracebacks are kept in the file. Replaces any handler set up earlier on the root logger.
    """
    import logging.handlers  # only here: it pulls in socket and pickle, the CLI stays light

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_MAX_BYTES,
                                                   backupCount=LOG_BACKUPS, encoding="utf-8",
                                                   delay=False)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    if capture_output:
        sys.stdout = LogWriter(logging.getLogger("stdout"), logging.INFO)
        sys.stderr = LogWriter(logging.getLogger("stderr"), logging.WARNING)
    return handler
