"""The one place that talks to people: shared rich consoles (wide when output is not a terminal, unless
COLUMNS says how wide)."""

from __future__ import annotations

import os
import sys

from rich.console import Console


def _width(stream) -> int | None:
    """None (rich asks the terminal, or reads COLUMNS) for a terminal or a set COLUMNS; else 160 for a pipe."""
    return None if stream.isatty() or os.environ.get("COLUMNS", "").isdigit() else 160


console = Console(highlight=False, width=_width(sys.stdout))
errors = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 400)
