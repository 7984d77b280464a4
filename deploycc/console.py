"""The one place that talks to people: a shared rich console and helpers for tables."""

from __future__ import annotations

from rich.console import Console

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)
