"""``python -m resilience``: the operator CLI (see ``resilience --help``)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
