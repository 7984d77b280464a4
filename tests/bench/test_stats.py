"""Timing statistics: percentiles, coefficient of variation, per-call summaries, the noise threshold, the CPU
share other processes take, merging repeated rounds, and the verdict ("inconclusive", never "FALLS", on noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deploycc.bench import percentile, summarize_times
from deploycc.bench.stats import (BUSY_SHARE, DROP_RATIO, NOISY_CV, CpuSample, TimingStats, coefficient_of_variation,
                                  cpu_sample, merge_rounds, others_share, summarize_targets)

from bench_helpers import rec


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


# ------------------------------------------------------------------- contention, rounds and the verdict


def sample(machine: float | None, ours: float, wall: float, cores: int = 2) -> CpuSample:
    return CpuSample(machine=machine, ours=ours, wall=wall, cores=cores)


def test_others_share_is_the_machines_busy_time_less_ours_per_core_second():
    assert others_share(sample(10.0, 1.0, 100.0), sample(12.0, 1.5, 101.0)) == pytest.approx(0.75)
    assert others_share(sample(10.0, 1.0, 100.0), sample(11.0, 2.0, 101.0)) == 0.0  # all of it ours
    assert others_share(sample(10.0, 1.0, 100.0), sample(20.0, 1.0, 101.0)) == 1.0  # clamped
    assert others_share(sample(None, 1.0, 100.0), sample(12.0, 1.5, 101.0)) is None
    assert others_share(sample(10.0, 1.0, 100.0), sample(12.0, 1.5, 100.0)) is None  # no time passed


def test_cpu_sample_counts_our_own_work():
    before = cpu_sample()
    total = 0
    while cpu_sample().ours - before.ours < 0.05:
        total += sum(range(10_000))
    after = cpu_sample()
    assert after.cores >= 1 and after.wall > before.wall and after.ours > before.ours
    if after.machine is not None:  # Linux: the machine's busy time includes ours
        assert after.machine - before.machine > 0
        assert 0.0 <= others_share(before, after) <= 1.0


def test_merge_rounds_keeps_the_median_round_in_first_seen_order():
    rounds = [[rec("eager", 1, 100), rec("eager", 8, 400), rec("onnx", 1, 300)],
              [rec("onnx", 1, 200), rec("eager", 1, 150), rec("eager", 8, 380)],
              [rec("eager", 8, 390), rec("eager", 1, 90), rec("onnx", 1, 250)]]
    merged = merge_rounds(rounds)
    assert [(r.target, r.batch_size) for r in merged] == [("eager", 1), ("eager", 8), ("onnx", 1)]
    assert [r.structures_per_s for r in merged] == [100, 390, 250]
    two = merge_rounds(rounds[:2])  # an even count: the faster of the two middle rounds
    assert [r.structures_per_s for r in two] == [150, 400, 300]
    assert merge_rounds([rounds[0]]) == rounds[0]


def falling(fast: float = 200.0) -> list:
    """eager: 100/s at batch 1, 400/s at batch 8, `fast`/s at batch 64."""
    return [rec("eager", 1, 100), rec("eager", 8, 400), rec("eager", 64, fast)]


def test_a_fall_seen_in_every_round_falls_and_one_seen_in_some_is_inconclusive():
    steady = [falling(), falling(250.0)]
    summary = summarize_targets(merge_rounds(steady), rounds=steady)[0]
    assert not summary.inconclusive and summary.reasons == []
    assert "throughput FALLS" in summary.line() and "batch 64" in summary.line()
    flaky = [falling(), falling(250.0), falling(390.0)]  # the third round shows no fall (390 > 0.9 x 400)
    summary = summarize_targets(merge_rounds(flaky), rounds=flaky)[0]
    assert [d["batch"] for d in summary.drops] == [64]  # the median round still falls
    assert summary.inconclusive and summary.reasons == ["seen in 2 of 3 rounds"]
    line = summary.line()
    assert "inconclusive (seen in 2 of 3 rounds)" in line and "FALLS" not in line


def test_the_verdict_names_every_reason_once():
    noisy = NOISY_CV + 0.1
    records = [rec("eager", 1, 400, cv=noisy), rec("eager", 8, 200), rec("eager", 64, 100)]
    summary = summarize_targets(records, busy=True)[0]
    assert [d["batch"] for d in summary.drops] == [8, 64]
    assert summary.reasons == ["machine busy", f"timings noisy: CV above {100 * NOISY_CV:.0f}%"]
    assert summary.to_dict()["reasons"] == summary.reasons and "FALLS" not in summary.line()
    assert "never falls" in summarize_targets(records[:1], busy=True)[0].line()  # busy alone: no verdict change
    assert DROP_RATIO < 1.0 and 0.0 < BUSY_SHARE < 1.0
