"""Rendering bench results: number formats, table rows, header lines, Markdown, the plot; repeated rounds and
contention while measuring, as the report shows them."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

import deploycc.bench.driver as driver
from deploycc.bench import BenchConfig, BenchResult, MeasureSettings, header_lines, measure_runner, summarize_targets
from deploycc.bench import table_rows, to_markdown
from deploycc.bench import run_bench
from deploycc.bench.driver import make_header, note_contention
from deploycc.bench.stats import BUSY_SHARE
from deploycc.errors import UserInputError
from deploycc.bench.memory import MEMORY_NOTE
from deploycc.bench.plot import plot_result
from deploycc.bench.report import format_ms, format_rate
from deploycc.bench.workload import make_workload
from deploycc.targets.eager import eager_runner

from bench_helpers import rec
from helpers import make_model, molecules


@pytest.fixture(scope="module")
def sweep() -> BenchResult:
    """A real (tiny) eager sweep."""
    workload = make_workload(molecules([5, 6, 7, 8, 9]), atoms=7, source="mols")
    settings = MeasureSettings(warmup=1, min_iters=3, min_seconds=0.0, pool=8)
    records, notices = measure_runner(eager_runner(make_model(), "cpu"), "eager", workload, [1, 2], "cpu", 5.0,
                                      settings)
    config = BenchConfig(model="random", targets="eager", batch_sizes=[1, 2], threads=1, min_iters=3,
                         min_seconds=0.0, warmup=1)
    header = {**make_header(config, "random", workload), "busy_warning": None}  # whatever the load here
    return BenchResult(header, records, summarize_targets(records), notices)


@pytest.mark.parametrize("value, text", [(0.01234, "0.012"), (9.9994, "9.999"), (12.345, "12.35"),
                                         (123.45, "123.5"), (1234.5, "1234.5")])
def test_format_ms(value, text):
    assert format_ms(value) == text


@pytest.mark.parametrize("value, text", [(1.234, "1.23"), (12.34, "12.3"), (123.4, "123"), (12345.6, "12,346")])
def test_format_rate(value, text):
    assert format_rate(value) == text


def test_table_has_one_row_per_record_and_a_mode_column_only_with_several_modes(sweep):
    columns, rows = table_rows(sweep)
    assert "mode" not in columns and len(rows) == len(sweep.records) == 2
    assert {"median ms", "p90 ms", "peak MB", "neighbours ms", "structures/s"} <= set(columns)
    assert "padded atoms" not in " ".join(columns)
    for record, row in zip(sweep.records, rows):
        cells = dict(zip(columns, row))
        assert cells["target"] == "eager" and cells["batch"] == str(record.batch_size)
        assert cells["median ms"] == format_ms(record.median_ms)
        assert cells["neighbours ms"] == format_ms(record.neighbours_ms)
        assert cells["structures/s"] == format_rate(record.structures_per_s)
    mixed = BenchResult({}, [rec("eager", 1, 100, mode="device", device="cuda"),
                             rec("eager", 1, 50, mode="host", device="cuda")])
    columns, rows = table_rows(mixed)
    assert columns[:3] == ["target", "mode", "batch"] and [r[1] for r in rows] == ["device", "host"]


def test_markdown_has_the_table_summary_warnings_and_notices(sweep):
    text = to_markdown(sweep)
    rows = [line for line in text.splitlines() if line.startswith("| eager |")]
    assert len(rows) == len(sweep.records) == 2
    assert text.startswith("# deploycc bench: random")
    assert "CPU:" in text and "libraries:" in text and "## Summary" in text and MEMORY_NOTE in text
    assert "workload: 5 molecules of 5-9 atoms" in text and "neighbour lists built before timing" in text
    assert "## Warnings" not in text and "## Notices" not in text
    header = {**sweep.header, "busy_warning": "machine busy: load average 9"}
    noisy = BenchResult(header, sweep.records, sweep.summaries, ["onnx: batch 4 (host) failed: x"])
    text = to_markdown(noisy)
    assert "## Warnings\n\n- machine busy: load average 9" in text
    assert "## Notices\n\n- onnx: batch 4 (host) failed: x" in text
    separator = next(line for line in text.splitlines() if line.startswith("|---"))
    assert separator.count("|") == len(table_rows(sweep)[0]) + 1


def test_header_lines_name_periodic_workloads():
    header = {"model": "m", "device": "cpu", "cpu": "X", "logical_cores": 4, "cores_available": 2, "threads": 2,
              "workload": {"structures": 6, "periodic": 4, "min_atoms": 2, "max_atoms": 16, "mean_atoms": 8.0,
                           "source": "cells.extxyz"}, "input_pool": 8, "rattle_sigma_angstrom": 0.01,
              "load_average": [1.5, 1.0, 0.5], "gpu": "H100", "library_versions": {"torch": "2.5", "x": "1"}}
    lines = header_lines(header)
    assert "workload: 6 structures (4 periodic) of 2-16 atoms (mean 8.0) from cells.extxyz" in "\n".join(lines)
    assert "GPU: H100" in lines and "load average at start: 1.5, 1.0, 0.5" in lines
    assert lines[-1] == "libraries: torch 2.5"


def test_plot_writes_a_png(sweep, tmp_path):
    path = plot_result(sweep, tmp_path / "plots" / "bench.png")
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------- rounds and contention, reported


def test_header_lines_name_rounds_and_the_cpu_share_of_other_processes():
    header = {"warmup": 3, "min_iters": 10, "min_seconds": 0.3, "modes": ["host"], "rounds": 2,
              "others_cpu_share": 0.4}
    text = "\n".join(header_lines(header))
    assert "2 rounds (targets alternate; the median round kept)" in text
    assert "other processes kept 40% of the cores busy while measuring" in text
    single = "\n".join(header_lines({**header, "rounds": 1, "others_cpu_share": None}))
    assert "rounds" not in single and "other processes" not in single


def test_contention_while_measuring_makes_the_machine_busy():
    quiet = {"busy_warning": None}
    note_contention(quiet, 0.1)
    assert quiet == {"busy_warning": None, "others_cpu_share": 0.1}
    busy = {"busy_warning": None}
    note_contention(busy, BUSY_SHARE + 0.2)
    assert busy["busy_warning"].startswith("machine busy: other processes kept 45% of the cores busy")
    loaded = {"busy_warning": "machine busy: load average 9"}
    note_contention(loaded, 0.9)
    assert loaded["busy_warning"] == ("machine busy: load average 9; other processes kept 90% of the cores busy "
                                      "while measuring")
    unknown = {"busy_warning": None}
    note_contention(unknown, None)
    assert unknown == {"busy_warning": None, "others_cpu_share": None}


def test_rounds_alternate_the_targets_and_a_fall_must_repeat(monkeypatch, tmp_path, tiny_checkpoint, calib_file):
    """Fake workers: targets a and b, two rounds; b falls at batch 8 in its first round only (its batch 1 is slow
    in the second: contention), and the merged records (the faster round of two) fall too."""
    built = [SimpleNamespace(target=name, folder=tmp_path / name, model="m",
                             manifest=SimpleNamespace(checkpoint=SimpleNamespace(sha256=name))) for name in "ab"]
    calls: list[str] = []

    def worker(folder, target, config, on_event, structures):
        calls.append(target)
        if target == "a":
            records = [rec("a", 1, 100), rec("a", 8, 400)]
        else:  # b's first round (call 2) falls from 100/s to 80/s; its second (call 3) has 50/s at batch 1
            records = [rec("b", 1, 100 if len(calls) == 2 else 50), rec("b", 8, 80)]
        return {"records": [r.to_dict() for r in records], "notices": [f"{target} notice"], "info": {}}

    monkeypatch.setattr(driver, "_build_all", lambda *args: (built, []))
    monkeypatch.setattr(driver, "run_worker", worker)
    monkeypatch.setattr(driver, "note_contention", lambda header, share: header.update(others_cpu_share=0.0))
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    config = BenchConfig(model=str(tiny_checkpoint), targets="eager,onnx", batch_sizes=[1, 8], atoms=20,
                         structures=calib_file, out=tmp_path, rounds=2)
    events: list[str] = []
    result = run_bench(config, on_event=events.append)
    assert calls == ["a", "b", "b", "a"]
    assert "b: starting worker (round 2 of 2)" in events
    assert result.notices == ["a notice", "b notice"] and result.header["rounds"] == 2
    b = next(s for s in result.summaries if s.target == "b")
    assert [d["batch"] for d in b.drops] == [8] and b.reasons == ["seen in 1 of 2 rounds"]
    assert "2 rounds (targets alternate" in to_markdown(result) and "FALLS" not in to_markdown(result)
    with pytest.raises(UserInputError, match="--rounds"):
        BenchConfig(rounds=0).validate()
