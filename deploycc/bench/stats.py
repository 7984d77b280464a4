"""Statistics of per-call wall times: percentiles, coefficient of variation, and the noise verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

NOISY_CV = 0.25  # a coefficient of variation above this makes comparisons between runs inconclusive


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if len(values) == 0:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} outside 0..100")
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    position = (len(ordered) - 1) * q / 100.0
    low = int(np.floor(position))
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Sample standard deviation / mean (0 for fewer than two values)."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) < 2 or data.mean() == 0:
        return 0.0
    return float(data.std(ddof=1) / data.mean())


@dataclass(frozen=True)
class TimingStats:
    """Summary of per-call wall times, in milliseconds."""

    n: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    cv: float


def summarize_times(seconds: Sequence[float]) -> TimingStats:
    """Median, p90, p99, mean, min, max (ms) and coefficient of variation of per-call times in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if len(ms) == 0:
        raise ValueError("no timings to summarize")
    return TimingStats(n=len(ms), median_ms=percentile(ms, 50), p90_ms=percentile(ms, 90), p99_ms=percentile(ms, 99),
                       mean_ms=float(ms.mean()), min_ms=float(ms.min()), max_ms=float(ms.max()),
                       cv=coefficient_of_variation(ms))
