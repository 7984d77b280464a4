"""`deploycc bench`: statistics, the fresh-input pool, a real (tiny) eager sweep, markdown, plot, summaries.

No speed numbers are asserted: only shapes, keys, signs and bookkeeping.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from deploycc.bench import (RECORD_KEYS, BenchConfig, BenchRecord, BenchResult, MeasureSettings, coefficient_of_variation,
                            make_header, make_pool, make_workload, measure_runner, percentile, plot, resolve_targets,
                            select_structures, summarize_targets, summarize_times, table_rows, to_markdown)
from deploycc.errors import UserInputError
from deploycc.model import PRESET_CONFIGS, StudentModel
from deploycc.targets.eager import EagerRunner

torch.set_num_threads(1)


def molecules(sizes, seed: int = 0):
    rng = np.random.default_rng(seed)
    numbers = [rng.choice([1, 6, 7, 8], size=n).astype(np.int64) for n in sizes]
    positions = [rng.uniform(0.0, 4.0, size=(n, 3)) for n in sizes]
    return numbers, positions


# ---------------------------------------------------------------------------------------------- statistics


def test_percentile_matches_numpy_linear_interpolation():
    rng = np.random.default_rng(1)
    values = rng.lognormal(size=101)
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q), rel=1e-12)
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile(list(range(1, 11)), 90) == pytest.approx(9.1)
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_coefficient_of_variation():
    assert coefficient_of_variation([2.0, 2.0, 2.0]) == 0.0
    assert coefficient_of_variation([5.0]) == 0.0
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(math.sqrt(2.0) / 2.0)  # sample std / mean


def test_summarize_times_in_milliseconds():
    seconds = [0.001] * 98 + [0.002, 0.010]  # a tail that moves p99 and the mean, not the median
    stats = summarize_times(seconds)
    assert stats.n == 100
    assert stats.median_ms == pytest.approx(1.0)
    assert stats.p90_ms == pytest.approx(1.0)
    assert stats.p99_ms == pytest.approx(np.percentile(np.asarray(seconds) * 1e3, 99))
    assert stats.p99_ms > stats.p90_ms
    assert stats.mean_ms == pytest.approx(1.1)
    assert stats.min_ms == pytest.approx(1.0) and stats.max_ms == pytest.approx(10.0)
    assert stats.cv == pytest.approx(np.std(np.asarray(seconds), ddof=1) / np.mean(seconds))


def test_summary_speedups_and_throughput_drop():
    def rec(target, b, per_s):
        return BenchRecord(target, b, 25.0, b / per_s * 1e3, 1, 1, 1, 0.0, per_s, per_s * 25, 1.0, "host", "cpu",
                           None)

    records = [rec("eager", 1, 100), rec("eager", 8, 400), rec("eager", 64, 500),
               rec("fast", 1, 300), rec("fast", 8, 1200), rec("fast", 64, 1000)]  # 1000 < 0.9 * 1200
    summaries = {s.target: s for s in summarize_targets(records)}
    eager, fast = summaries["eager"], summaries["fast"]
    assert eager.speedup_small == pytest.approx(1.0) and not eager.drops
    assert (fast.small_batch, fast.large_batch) == (1, 64)
    assert fast.speedup_small == pytest.approx(3.0) and fast.speedup_large == pytest.approx(2.0)
    assert [d["batch"] for d in fast.drops] == [64] and fast.drops[0]["best_batch"] == 8
    assert "FALLS" in fast.line() and "never falls" in eager.line()


# ------------------------------------------------------------------------------------------------ workload


def test_select_structures_window_then_nearest():
    sizes = [5, 10, 22, 25, 28, 29, 40]
    assert sorted(select_structures(sizes, 25)) == [2, 3, 4]
    nearest = select_structures(sizes, 60, fallback=2)  # nothing within ±3: the nearest sizes
    assert sorted(np.asarray(sizes)[nearest]) == [29, 40]


def test_pool_never_repeats_consecutive_inputs():
    numbers, positions = molecules([6, 7, 8, 9, 30])
    workload = make_workload(numbers, positions, atoms=7)
    assert workload.n_atoms == 9 and len(workload.numbers) == 4  # 30 atoms is outside ±3
    for batch in (1, 3, 5):
        pool = make_pool(workload, batch, copies=8)
        assert len(pool) >= 8
        # every pool entry is distinct, so rotation never hands out the previous input again
        for i in range(len(pool)):
            for j in range(i + 1, len(pool)):
                assert not torch.equal(pool.entries[i][1], pool.entries[j][1])
        previous = None
        for _ in range(3 * len(pool)):
            z, r = pool.next()
            assert z.shape == (batch, 9) and r.shape == (batch, 9, 3)
            assert z.dtype == torch.int64 and r.dtype == torch.float32
            if previous is not None:
                assert not torch.equal(r, previous)
            previous = r
            real = z > 0
            assert not r[~real].any()  # padding stays zero
        # rattled by ~0.01 Å, not moved: compare with the unrattled molecule
        z, r = pool.entries[0]  # entry 0 starts at the workload's first molecule
        k = len(workload.numbers[0])
        assert torch.equal(z[0, :k], torch.from_numpy(workload.numbers[0]))
        shift = np.abs(r[0, :k].numpy() - workload.positions[0])
        assert 0 < shift.max() < 0.1


# ------------------------------------------------------------------------------------------- a real sweep


@pytest.fixture(scope="module")
def sweep():
    torch.manual_seed(0)
    runner = EagerRunner(StudentModel(PRESET_CONFIGS["tiny"]).eval(), "cpu")
    numbers, positions = molecules([5, 6, 7, 8, 9])
    workload = make_workload(numbers, positions, atoms=7)
    settings = MeasureSettings(warmup=1, min_iters=3, min_seconds=0.0, pool=8)
    records, notices = measure_runner(runner, "eager", workload, [1, 2], "cpu", settings, batch_limits=(1, 256))
    config = BenchConfig(model="random", targets="eager", batch_sizes=[1, 2], threads=1, min_iters=3,
                         min_seconds=0.0, warmup=1)
    return BenchResult(make_header(config, "random", workload), records, summarize_targets(records), notices)


def test_eager_sweep_records_have_all_keys_and_positive_numbers(sweep):
    assert [(r.batch_size, r.mode, r.device) for r in sweep.records] == [(1, "host", "cpu"), (2, "host", "cpu")]
    assert not sweep.notices
    payload = json.loads(json.dumps(sweep.to_dict()))  # JSON-serialisable as written by --json
    assert set(payload) >= {"header", "records"}
    for record in payload["records"]:
        assert set(RECORD_KEYS) <= set(record)
        for key in ("atoms", "median_ms", "p90_ms", "p99_ms", "mean_ms", "structures_per_s", "atoms_per_s"):
            assert record[key] > 0, key
        assert record["peak_mem_mb"] >= 0 and record["cv"] >= 0
        assert record["p99_ms"] >= record["p90_ms"] >= record["median_ms"] > 0
        assert record["iterations"] >= 3
        assert record["enqueue_bound"] is None  # only measured on CUDA
        assert record["atoms_per_s"] == pytest.approx(record["structures_per_s"] * record["atoms"], rel=1e-3)
    header = payload["header"]
    for key in ("cpu", "logical_cores", "threads", "gpu", "library_versions"):
        assert key in header
    assert "torch" in header["library_versions"]


def test_batch_sizes_outside_the_profile_are_skipped_with_a_notice():
    runner = EagerRunner(StudentModel(PRESET_CONFIGS["tiny"]).eval(), "cpu")
    workload = make_workload(*molecules([5, 6]), atoms=5)
    settings = MeasureSettings(warmup=0, min_iters=1, min_seconds=0.0)
    records, notices = measure_runner(runner, "eager", workload, [1, 4], "cpu", settings, batch_limits=(1, 2))
    assert [r.batch_size for r in records] == [1]
    assert len(notices) == 1 and "batch 4" in notices[0]
    records, notices = measure_runner(runner, "eager", workload, [1], "cpu", settings, max_atoms=4)
    assert records == [] and "atoms" in notices[0]


def test_markdown_has_one_row_per_record(sweep):
    text = to_markdown(sweep)
    rows = [line for line in text.splitlines() if line.startswith("| eager |")]
    assert len(rows) == len(sweep.records) == 2
    columns, table = table_rows(sweep)
    assert "median ms" in columns and "peak MB" in columns and len(table) == 2
    assert "CPU:" in text and "libraries:" in text and "## Summary" in text


def test_plot_writes_a_png(sweep, tmp_path):
    path = plot(sweep, tmp_path / "bench.png")
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_target_names():
    names, skip = resolve_targets("all")
    assert skip and "eager" in names
    assert resolve_targets("eager, onnx") == (["eager", "onnx"], False)
    with pytest.raises(UserInputError, match="unknown target"):
        resolve_targets("eager,nope")


def test_config_validation():
    with pytest.raises(UserInputError):
        BenchConfig(batch_sizes=[0]).validate()
    with pytest.raises(UserInputError):
        BenchConfig(pool=4).validate()
    with pytest.raises(UserInputError):
        BenchConfig(device="tpu").validate()


def test_run_bench_end_to_end_in_a_worker_process(tmp_path):
    """Build (eager) and measure in a separate `python -m deploycc.bench_worker` process, then read it back."""
    from deploycc.bench import run_bench
    from deploycc.checkpoint import save_checkpoint
    from deploycc.data.schema import Structures, write_h5

    torch.manual_seed(0)
    checkpoint = tmp_path / "random.pt"
    save_checkpoint(StudentModel(PRESET_CONFIGS["tiny"]).eval(), checkpoint, {})
    numbers, positions = molecules([5, 6, 7, 6])
    calib = tmp_path / "calib.h5"
    write_h5(Structures(numbers, positions), calib)
    config = BenchConfig(model=str(checkpoint), targets="eager", batch_sizes=[1, 2], atoms=6, threads=1,
                         out=tmp_path / "art", min_iters=2, min_seconds=0.0, warmup=1, structures=calib, calib=calib,
                         worker_timeout=120)
    events: list[str] = []
    result = run_bench(config, on_event=events.append)
    assert [(r.target, r.batch_size) for r in result.records] == [("eager", 1), ("eager", 2)]
    assert result.header["workers"]["eager"]["torch_threads"] == 1
    assert result.header["model"] == "random"
    assert any("batch 2" in e for e in events)
    result.write_json(tmp_path / "bench.json")
    assert len(json.loads((tmp_path / "bench.json").read_text())["records"]) == 2


def test_unavailable_targets_error_when_named_and_are_skipped_under_all(monkeypatch):
    import deploycc.pipeline
    from deploycc.bench import run_bench
    from deploycc.errors import MissingDependencyError

    def unavailable(source, name, *args, **kwargs):
        raise MissingDependencyError(f"target '{name}' cannot build here: no GPU")

    monkeypatch.setattr(deploycc.pipeline, "build", unavailable)
    with pytest.raises(MissingDependencyError):
        run_bench(BenchConfig(targets="trt", batch_sizes=[1]))
    result = run_bench(BenchConfig(targets="all", batch_sizes=[1]))
    assert result.records == []
    assert len(result.notices) == len(resolve_targets("all")[0])
    assert all(n.startswith("skipped ") for n in result.notices)
