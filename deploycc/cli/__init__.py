"""The `deploycc` command line: verbs in their modules, rendering in render.py; user errors become one line
and an exit code, bugs keep their traceback."""

from __future__ import annotations

import sys

from ..errors import DeployccError
from . import datasets, artifacts, runs, performance  # noqa: F401,I001  (each registers its verbs, in help order)
from .app import app
from .console import errors

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit; bugs keep their traceback."""
    try:
        app()
    except DeployccError as exc:
        errors.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
