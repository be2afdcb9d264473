"""The one logging setup, called by the entry points only.

`pneumo` (pneumo/cli.py), `python -m edge_app` (edge_app/cli.py) and the `pneumo-edge`
executable (installer/entry.py) call `setup_logging` once at start; every module logs
through ``logging.getLogger(__name__)`` and never configures logging itself. Standard
library only, so the command line stays fast to start.
"""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """INFO and above to stderr (progress of training, export and benchmarks; server logs).

    Does nothing when logging is configured already (an embedding program, pytest).
    """
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
