"""`python -m pneumo.app serve|predict` (also the entry of a packaged executable)."""

import sys

from pneumo.app.runtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
