"""Timing one open runner: warm-up and timed calls on fresh prepared inputs, records, skipped and failed
batch sizes, the memory probe.  No speed numbers are asserted: only shapes, keys, signs and bookkeeping."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from deploycc.bench import BenchRecord, MeasureSettings, measure_runner
from deploycc.bench.measure import RECORD_KEYS, caller, measure_batch, modes_for, time_calls
from deploycc.bench.memory import MemoryProbe
from deploycc.bench.workload import make_pool, make_workload
from deploycc.targets.base import Prediction, Runner
from deploycc.targets.eager import eager_runner

from helpers import make_model, molecules

CUTOFF = 5.0
QUICK = MeasureSettings(warmup=1, min_iters=3, min_seconds=0.0, pool=8)


class Recording(Runner):
    """A runner that records what it was given (and can sleep or fail)."""

    def __init__(self, sleep: float = 0.0, fail_at_atoms: int | None = None, message: str = "boom") -> None:
        self.seen: list = []
        self.impl_seen: list = []
        self.synced = 0
        self.sleep = sleep
        self.fail_at_atoms = fail_at_atoms
        self.message = message

    def infer(self, batch):
        if self.fail_at_atoms is not None and batch.atoms >= self.fail_at_atoms:
            raise RuntimeError(self.message)
        self.seen.append(batch)
        if self.sleep:
            time.sleep(self.sleep)
        zeros = np.zeros(batch.structures)
        return Prediction(zeros, np.zeros((batch.atoms, 3)), np.zeros((batch.structures, 3, 3)), batch.offsets)

    def infer_impl(self, inputs):
        self.impl_seen.append(inputs)
        a = inputs.atoms
        return torch.zeros(a), torch.zeros(a, 3), torch.zeros(a, 3, 3)

    def synchronize(self) -> None:
        self.synced += 1


@pytest.fixture(scope="module")
def workload():
    return make_workload(molecules([5, 6, 7, 8, 9]), atoms=7)


def test_modes_per_device():
    assert modes_for("cpu") == ("host",)
    assert modes_for("cuda") == ("device", "host") and modes_for("cuda:1") == ("device", "host")


def test_time_calls_warms_up_untimed_then_times_at_least_min_iters(workload):
    pool = make_pool(workload, 1, CUTOFF, copies=4)
    calls = []
    times = time_calls(calls.append, pool, warmup=3, min_iters=5, min_seconds=0.0)
    assert len(times) == 5 and len(calls) == 8 and all(t >= 0 for t in times)
    assert all(a is not b for a, b in zip(calls, calls[1:]))  # fresh input every call
    calls.clear()
    started = time.perf_counter()
    times = time_calls(lambda e: time.sleep(0.002), pool, warmup=0, min_iters=1, min_seconds=0.05)
    assert time.perf_counter() - started >= 0.05 and len(times) >= 2  # min_seconds also bounds the loop
    assert min(times) >= 0.002


def test_host_mode_times_infer_on_the_host_batch_and_device_mode_the_graph(workload):
    pool = make_pool(workload, 2, CUTOFF, copies=2)
    runner = Recording()
    entry = pool.entries[0]
    caller(runner, "host", False)(entry)
    assert runner.seen == [entry.batch] and runner.impl_seen == [] and runner.synced == 0
    caller(runner, "device", True)(entry)
    assert runner.impl_seen == [entry.inputs] and runner.synced == 1


def test_measure_batch_times_the_call_on_fresh_inputs_only(workload):
    pool = make_pool(workload, 2, CUTOFF, copies=8)
    runner = Recording(sleep=0.003)
    settings = MeasureSettings(warmup=2, min_iters=6, min_seconds=0.0, pool=8)
    record = measure_batch(runner, "fake", pool, "cpu", "host", settings)
    assert len(runner.seen) == 8  # 2 warm-up + 6 timed
    assert all(a is not b for a, b in zip(runner.seen, runner.seen[1:]))
    assert record.iterations == 6 and record.batch_size == 2 and record.target == "fake"
    assert record.median_ms >= 3.0 and record.min_ms >= 3.0  # the runner's own time is inside the timing
    assert record.structures_per_s == pytest.approx(2 / (record.median_ms / 1e3))
    assert record.atoms == pytest.approx(round(pool.atoms_per_structure, 2))
    assert record.atoms_per_s == pytest.approx(record.structures_per_s * pool.atoms_per_structure)
    assert record.slots == pool.slots > 0
    assert record.neighbours_ms == pytest.approx(1e3 * np.median(pool.neighbour_seconds))
    assert record.enqueue_bound is None and record.enqueue_ratio is None and record.warning is None
    assert record.memory_method in ("VmHWM", "ru_maxrss") and record.peak_mem_mb >= 0


def test_eager_sweep_records_have_all_keys_and_positive_numbers(workload):
    runner = eager_runner(make_model(), "cpu")
    events: list[str] = []
    records, notices = measure_runner(runner, "eager", workload, [2, 1, 2], "cpu", CUTOFF, QUICK,
                                      on_event=events.append)
    assert [(r.batch_size, r.mode, r.device) for r in records] == [(1, "host", "cpu"), (2, "host", "cpu")]
    assert not notices and events == ["batch 1 (host)", "batch 2 (host)"]
    payload = json.loads(json.dumps([r.to_dict() for r in records]))  # JSON-serialisable as written by --json
    for record in payload:
        assert set(RECORD_KEYS) <= set(record)
        assert "padded_atoms" not in record and record["slots"] > 0 and record["neighbours_ms"] > 0
        for key in ("atoms", "median_ms", "p90_ms", "p99_ms", "mean_ms", "structures_per_s", "atoms_per_s"):
            assert record[key] > 0, key
        assert record["peak_mem_mb"] >= 0 and record["cv"] >= 0
        assert record["p99_ms"] >= record["p90_ms"] >= record["median_ms"] >= record["min_ms"] > 0
        assert record["max_ms"] >= record["p99_ms"]
        assert record["iterations"] >= 3 and record["seconds"] > 0
        assert record["enqueue_bound"] is None  # only measured on CUDA
        assert record["atoms_per_s"] == pytest.approx(record["structures_per_s"] * record["atoms"], rel=1e-3)
        assert 5 <= record["atoms"] <= 9
        assert BenchRecord(**record) == next(r for r in records if r.batch_size == record["batch_size"])
    # the slot width is the neighbour list's, not a padded molecule width
    assert records[0].slots <= 8  # at most 8 neighbours in molecules of at most 9 atoms


def test_batch_sizes_above_the_atoms_profile_are_skipped_with_a_notice(workload):
    runner = Recording()
    records, notices = measure_runner(runner, "fake", workload, [1, 2, 4], "cpu", CUTOFF, QUICK,
                                      max_atoms=2 * 9)  # any two structures fit, four do not
    assert [r.batch_size for r in records] == [1, 2]
    assert len(notices) == 1 and "batch 4" in notices[0] and "atoms profile max" in notices[0]
    assert all(b.atoms <= 2 * 9 for b in runner.seen)
    records, notices = measure_runner(runner, "fake", workload, [1], "cpu", CUTOFF, QUICK, max_atoms=4)
    assert records == [] and len(notices) == 1 and "batch 1" in notices[0]


def test_no_call_exceeds_the_atoms_profile_even_when_the_mean_fits():
    """Sizes 17, 20 and 23 average 20: batch 2 fits 41 atoms on average, but a call of 23 + 20 does not."""
    workload = make_workload(molecules([17, 20, 23], seed=2), atoms=20)
    runner = Recording()
    records, notices = measure_runner(runner, "fake", workload, [1, 2], "cpu", CUTOFF, QUICK, max_atoms=41)
    assert [r.batch_size for r in records] == [1]
    assert len(notices) == 1 and "batch 2" in notices[0] and "atoms profile max 41" in notices[0]
    assert runner.seen and max(b.atoms for b in runner.seen) <= 41


def test_a_failing_batch_size_is_a_notice_and_out_of_memory_stops_the_sweep(workload):
    fails_large = Recording(fail_at_atoms=20, message="kernel failed\nsecond line")
    records, notices = measure_runner(fails_large, "fake", workload, [1, 4, 8], "cpu", CUTOFF, QUICK)
    assert [r.batch_size for r in records] == [1]
    assert notices == ["fake: batch 4 (host) failed: kernel failed", "fake: batch 8 (host) failed: kernel failed"]
    oom = Recording(fail_at_atoms=20, message="CUDA out of memory. Tried to allocate 2 GiB")
    records, notices = measure_runner(oom, "fake", workload, [1, 4, 8], "cpu", CUTOFF, QUICK)
    assert [r.batch_size for r in records] == [1]
    assert len(notices) == 1 and "batch 4" in notices[0] and "out of memory" in notices[0]


def test_memory_probe_sees_growth_within_the_span():
    probe = MemoryProbe("cpu")
    probe.start()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    growth, peak = probe.stop()
    assert probe.method in ("VmHWM", "ru_maxrss")
    assert peak > 0 and 0 <= growth <= peak
    if probe.method == "VmHWM":  # a resettable peak: the span's own growth is seen
        assert growth >= 0.9 * block.nbytes / 1e6
    del block
