"""Timing statistics: percentiles, coefficient of variation, per-call summaries, the noise threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deploycc.bench import percentile, summarize_times
from deploycc.bench.stats import NOISY_CV, TimingStats, coefficient_of_variation


def test_percentile_matches_numpy_linear_interpolation():
    rng = np.random.default_rng(1)
    values = rng.lognormal(size=101)
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q), rel=1e-12)
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile(list(range(1, 11)), 90) == pytest.approx(9.1)
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0], 0) == 1.0 and percentile([3.0, 1.0], 100) == 3.0


@pytest.mark.parametrize("values, q", [([], 50), ([1.0], 101), ([1.0], -1)])
def test_percentile_refuses_no_values_and_out_of_range(values, q):
    with pytest.raises(ValueError):
        percentile(values, q)


def test_coefficient_of_variation():
    assert coefficient_of_variation([2.0, 2.0, 2.0]) == 0.0
    assert coefficient_of_variation([5.0]) == 0.0
    assert coefficient_of_variation([]) == 0.0
    assert coefficient_of_variation([0.0, 0.0]) == 0.0  # zero mean: no division
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(math.sqrt(2.0) / 2.0)  # sample std / mean


def test_summarize_times_in_milliseconds():
    seconds = [0.001] * 98 + [0.002, 0.010]  # a tail that moves p99 and the mean, not the median
    stats = summarize_times(seconds)
    assert isinstance(stats, TimingStats)
    assert stats.n == 100
    assert stats.median_ms == pytest.approx(1.0)
    assert stats.p90_ms == pytest.approx(1.0)
    assert stats.p99_ms == pytest.approx(np.percentile(np.asarray(seconds) * 1e3, 99))
    assert stats.p99_ms > stats.p90_ms
    assert stats.mean_ms == pytest.approx(1.1)
    assert stats.min_ms == pytest.approx(1.0) and stats.max_ms == pytest.approx(10.0)
    assert stats.cv == pytest.approx(np.std(np.asarray(seconds), ddof=1) / np.mean(seconds))
    with pytest.raises(ValueError):
        summarize_times([])


def test_noisy_threshold_separates_steady_from_noisy_timings():
    steady = summarize_times([0.010, 0.0101, 0.0099, 0.0100, 0.0102])
    noisy = summarize_times([0.010, 0.030, 0.005, 0.020, 0.001])
    assert 0.0 < NOISY_CV < 1.0
    assert steady.cv < NOISY_CV < noisy.cv
