"""`python -m edge_app serve|predict` (also the entry of a packaged executable)."""

import sys

from edge_app.cli import main

if __name__ == "__main__":
    sys.exit(main())
