"""Helpers of the bench tests: made-up bench records (measured-data input, not measurements)."""

from __future__ import annotations

from deploycc.bench import BenchRecord


def rec(target: str, b: int, per_s: float, cv: float = 0.05, mode: str = "host", device: str = "cpu",
        warning: str | None = None) -> BenchRecord:
    """A record of `b` structures of 25 atoms at `per_s` structures/s."""
    return BenchRecord(target, b, 25.0, b / per_s * 1e3, 1, 1, 1, cv, per_s, per_s * 25, 1.0, mode, device, None,
                       warning=warning, slots=12, neighbours_ms=0.5)
