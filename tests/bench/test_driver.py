"""The bench driver: configuration checks, per-target summaries and their noise verdict, the header, the
latest-bench file, worker processes, and `run_bench` end to end (a real eager build measured in a worker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import deploycc.build
from deploycc.bench import (BenchConfig, BenchResult, TargetSummary, latest_path, run_bench,
                            save_latest, summarize_targets)
from deploycc.bench.driver import DROP_RATIO, make_header, resolve_targets, run_worker, worker_command, worker_env
from deploycc.bench.stats import NOISY_CV
from deploycc.bench.workload import make_workload
from deploycc.errors import DeployccError, MissingDependencyError, UserInputError

from bench_helpers import rec
from helpers import molecules


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


# ------------------------------------------------------------------------------------------------ summaries


def test_summary_speedups_and_throughput_drop():
    records = [rec("eager", 1, 100), rec("eager", 8, 400), rec("eager", 64, 500),
               rec("fast", 1, 300), rec("fast", 8, 1200), rec("fast", 64, 1000)]  # 1000 < 0.9 * 1200
    summaries = {s.target: s for s in summarize_targets(records)}
    assert list(summaries) == ["eager", "fast"]  # first-seen order
    eager, fast = summaries["eager"], summaries["fast"]
    assert eager.speedup_small == pytest.approx(1.0) and eager.speedup_large == pytest.approx(1.0)
    assert not eager.drops and not eager.inconclusive
    assert (fast.small_batch, fast.large_batch) == (1, 64)
    assert fast.speedup_small == pytest.approx(3.0) and fast.speedup_large == pytest.approx(2.0)
    assert [d["batch"] for d in fast.drops] == [64] and fast.drops[0]["best_batch"] == 8
    assert fast.drops[0]["best"] == 1200 and fast.drops[0]["structures_per_s"] == 1000
    assert not fast.inconclusive
    assert "throughput FALLS" in fast.line() and "inconclusive" not in fast.line()
    assert "3.00× eager at batch 1" in fast.line() and "2.00× at batch 64" in fast.line()
    assert "(batch 64 1000/s < 0.9 × batch 8 1200/s)" in fast.line()
    assert "never falls" in eager.line()


def test_a_fall_within_the_drop_ratio_is_not_flagged():
    records = [rec("eager", 1, 100), rec("eager", 8, 100 * DROP_RATIO + 1)]
    assert not summarize_targets(records)[0].drops


def test_a_fall_on_noisy_timings_is_inconclusive_not_falls():
    noisy = NOISY_CV + 0.05
    for records in (
        [rec("eager", 1, 100), rec("eager", 8, 400), rec("eager", 64, 200, cv=noisy)],  # the falling batch noisy
        [rec("eager", 1, 100), rec("eager", 8, 400, cv=noisy), rec("eager", 64, 200)],  # the best batch noisy
    ):
        summary = summarize_targets(records)[0]
        assert [d["batch"] for d in summary.drops] == [64]
        assert summary.inconclusive
        line = summary.line()
        assert "inconclusive" in line and "FALLS" not in line and "batch 64" in line
    # noise at a batch not involved in the fall does not hide it
    records = [rec("eager", 1, 100, cv=noisy), rec("eager", 8, 400), rec("eager", 64, 200)]
    summary = summarize_targets(records)[0]
    assert not summary.inconclusive and "FALLS" in summary.line()


def test_a_fall_on_a_busy_machine_is_inconclusive():
    records = [rec("eager", 1, 100), rec("eager", 8, 400), rec("eager", 64, 200)]
    assert not summarize_targets(records)[0].inconclusive
    busy = summarize_targets(records, busy=True)[0]
    assert busy.inconclusive and "inconclusive" in busy.line()
    steady = summarize_targets([rec("eager", 1, 100), rec("eager", 8, 400)], busy=True)[0]
    assert not steady.drops and "never falls" in steady.line()  # busy alone changes no verdict


def test_summaries_compare_within_one_mode_and_device():
    records = [rec("eager", 1, 100, mode="device", device="cuda"), rec("eager", 1, 50, mode="host", device="cuda"),
               rec("trt", 1, 400, mode="device", device="cuda"), rec("trt", 1, 100, mode="host", device="cuda"),
               rec("onnx", 2, 10)]
    summaries = {(s.target, s.mode): s for s in summarize_targets(records)}
    assert summaries[("trt", "device")].speedup_small == pytest.approx(4.0)
    assert summaries[("trt", "host")].speedup_small == pytest.approx(2.0)
    onnx = summaries[("onnx", "host")]
    assert onnx.speedup_small is None and "no eager baseline" in onnx.line()
    assert isinstance(onnx, TargetSummary) and onnx.to_dict()["target"] == "onnx"


# ------------------------------------------------------------------------------------------ config, header


def test_target_names():
    names, skip = resolve_targets("all")
    assert skip and "eager" in names and "onnx" in names
    assert resolve_targets("eager, onnx") == (["eager", "onnx"], False)
    assert resolve_targets(["eager", "onnx"]) == (["eager", "onnx"], False)
    with pytest.raises(UserInputError, match="unknown target 'nope'"):
        resolve_targets("eager,nope")


@pytest.mark.parametrize("change, fragment", [
    ({"batch_sizes": [0]}, "batch sizes"), ({"batch_sizes": []}, "batch sizes"), ({"atoms": 0}, "--atoms"),
    ({"threads": 0}, "--threads"), ({"min_iters": 0}, "--min-iters"), ({"min_seconds": -1.0}, "--min-seconds"),
    ({"warmup": -1}, "--warmup"), ({"pool": 4}, "at least 8"), ({"device": "tpu"}, "tpu"),
])
def test_config_validation(change, fragment):
    BenchConfig().validate()
    with pytest.raises(UserInputError) as caught:
        BenchConfig(**change).validate()
    assert fragment in one_line(caught.value)


def test_header_describes_machine_workload_and_a_busy_machine(monkeypatch):
    workload = make_workload(molecules([5, 6, 7]), atoms=6, source="mols")
    config = BenchConfig(model="random", batch_sizes=[4, 1, 4], threads=1, warmup=2, min_iters=3, min_seconds=0.0)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    header = make_header(config, "random", workload)
    for key in ("cpu", "logical_cores", "cores_available", "threads", "gpu", "library_versions", "date"):
        assert key in header, key
    assert "torch" in header["library_versions"] and header["busy_warning"] is None
    assert header["batch_sizes"] == [1, 4] and header["modes"] == ["host"] and header["threads"] == 1
    assert header["workload"] == workload.describe() and header["workload"]["mean_atoms"] == 6.0
    assert json.loads(json.dumps(header)) == header
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    busy = make_header(config, "random", workload)
    assert "machine busy" in busy["busy_warning"] and "64.0" in busy["busy_warning"]
    result = BenchResult(busy, [rec("eager", 1, 100), rec("eager", 2, 150, warning="enqueue-bound: slow host")])
    assert result.warnings == [busy["busy_warning"], "eager batch 2 (host): enqueue-bound: slow host"]


def test_latest_bench_path_and_atomic_save(tmp_path):
    assert latest_path(tmp_path, "tiny", "cuda:0") == tmp_path / "tiny" / "bench" / "latest-cuda-0.json"
    result = BenchResult({"model": "m", "device": "cpu"}, [rec("eager", 1, 100)],
                         summarize_targets([rec("eager", 1, 100)]), ["a notice"])
    path = save_latest(result, tmp_path)
    assert path == latest_path(tmp_path, "m", "cpu")
    saved = json.loads(path.read_text())
    assert saved["records"][0]["slots"] == 12 and saved["notices"] == ["a notice"]
    assert saved["summary"][0]["target"] == "eager"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_worker_command_and_environment_fix_threads(tmp_path):
    config = BenchConfig(batch_sizes=[1, 8], atoms=12, threads=3, min_iters=4, min_seconds=0.5, warmup=2,
                         structures=tmp_path / "s.h5")
    command = worker_command(tmp_path / "art", config, tmp_path / "r.json")
    assert command[:3] == [sys.executable, "-m", "deploycc.bench.worker"]
    pairs = dict(zip(command[3::2], command[4::2]))
    assert pairs["--threads"] == "3" and pairs["--batch-sizes"] == "1,8" and pairs["--atoms"] == "12"
    assert pairs["--min-seconds"] == "0.5" and pairs["--structures"] == str((tmp_path / "s.h5").resolve())
    env = worker_env(3)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3" and env["PYTHONUNBUFFERED"] == "1"
    assert str(Path(deploycc.build.__file__).resolve().parents[1]) in env["PYTHONPATH"].split(os.pathsep)


def test_a_failing_worker_is_one_error_with_its_stderr(tmp_path, calib_file):
    config = BenchConfig(threads=1, worker_timeout=120)
    with pytest.raises(DeployccError) as caught:
        run_worker(tmp_path / "no-such-artifact", "eager", config, structures=calib_file)
    text = one_line(caught.value)
    assert "bench worker for eager failed" in text and "no-such-artifact" in text


def test_a_silent_hanging_worker_is_stopped_at_the_timeout(tmp_path, monkeypatch):
    import time

    import deploycc.bench.driver as driver

    hang = [sys.executable, "-c", "import time; time.sleep(60)"]
    monkeypatch.setattr(driver, "worker_command", lambda *args, **kwargs: hang)
    started = time.monotonic()
    with pytest.raises(DeployccError) as caught:
        run_worker(tmp_path, "eager", BenchConfig(worker_timeout=1.0))
    assert time.monotonic() - started < 30
    assert "bench worker for eager timed out after 1 s" in one_line(caught.value)


# --------------------------------------------------------------------------------------------- run_bench


def test_run_bench_end_to_end_in_a_worker_process(tmp_path, tiny_checkpoint, calib_file):
    """Build (eager) and measure in a separate `python -m deploycc.bench.worker` process, then read it back."""
    config = BenchConfig(model=str(tiny_checkpoint), targets="eager", batch_sizes=[1, 2], atoms=20, threads=1,
                         out=tmp_path / "art", min_iters=2, min_seconds=0.0, warmup=1, structures=calib_file,
                         calib=calib_file, worker_timeout=120)
    events: list[str] = []
    result = run_bench(config, on_event=events.append)
    assert [(r.target, r.batch_size, r.mode) for r in result.records] == [("eager", 1, "host"), ("eager", 2, "host")]
    for r in result.records:
        assert 17 <= r.atoms <= 23 and 0 < r.slots < 23 and r.neighbours_ms > 0 and r.iterations >= 2
    header = result.header
    assert header["model"] == "tiny-test" and header["workers"]["eager"]["torch_threads"] == 1
    assert header["workers"]["eager"]["omp_num_threads"] == "1"
    assert header["workload"]["target_atoms"] == 20 and header["workload"]["structures"] == 3
    assert header["checkpoint_sha256"]["eager"] and header["structures_file"] == str(calib_file)
    assert Path(header["artifacts"]["eager"]).is_dir()
    assert any("batch 2" in e for e in events) and any("eager: build" == e for e in events)
    assert [s.target for s in result.summaries] == ["eager"]
    saved = json.loads(latest_path(tmp_path / "art", "tiny-test", "cpu").read_text())
    assert len(saved["records"]) == 2 and saved["header"]["checkpoint_sha256"] == header["checkpoint_sha256"]
    result.write_json(tmp_path / "bench.json")
    assert json.loads((tmp_path / "bench.json").read_text())["records"] == saved["records"]


def test_a_workload_without_structures_of_that_size_fails_before_building(tmp_path, tiny_checkpoint, calib_file):
    config = BenchConfig(model=str(tiny_checkpoint), targets="eager", batch_sizes=[1], atoms=60,
                         out=tmp_path / "art", structures=calib_file, calib=calib_file)
    with pytest.raises(UserInputError) as caught:
        run_bench(config)
    text = one_line(caught.value)
    assert str(calib_file) in text and "60" in text and "2 to 30" in text
    assert not (tmp_path / "art").exists()  # nothing built, nothing saved


def test_unavailable_targets_error_when_named_and_nothing_measured_is_one_line(monkeypatch, tmp_path):
    def unavailable(source, name, *args, **kwargs):
        raise MissingDependencyError(f"target '{name}' cannot build here: no GPU")

    monkeypatch.setattr(deploycc.build, "build", unavailable)
    with pytest.raises(MissingDependencyError, match="'trt' cannot build here"):
        run_bench(BenchConfig(targets="trt", batch_sizes=[1], out=tmp_path))
    with pytest.raises(UserInputError) as caught:
        run_bench(BenchConfig(targets="all", batch_sizes=[1], out=tmp_path))
    text = one_line(caught.value)
    assert text.startswith("nothing was measured: skipped ")
    assert text.count("skipped ") == len(resolve_targets("all")[0])
    assert not latest_path(tmp_path, "tiny", "cpu").exists()  # an empty bench is never saved as the latest


def test_a_bench_whose_every_batch_is_skipped_measured_nothing(tmp_path, tiny_checkpoint, calib_file, monkeypatch):
    """Built, but the artifact's atoms profile (an override file) takes no call of the workload."""
    (tmp_path / "home" / "targets").mkdir(parents=True)
    (tmp_path / "home" / "targets" / "eager.toml").write_text("[atoms]\nmin = 1\nopt = 8\nmax = 12\n")
    monkeypatch.setenv("DEPLOYCC_HOME", str(tmp_path / "home"))  # the worker inherits it
    config = BenchConfig(model=str(tiny_checkpoint), targets="eager", batch_sizes=[1, 2], atoms=20, threads=1,
                         out=tmp_path / "art", min_iters=1, min_seconds=0.0, warmup=0, structures=calib_file,
                         calib=calib_file, worker_timeout=120)
    with pytest.raises(UserInputError) as caught:
        run_bench(config)
    text = one_line(caught.value)
    assert text.startswith("nothing was measured: eager: batch 1 skipped") and "atoms profile max 12" in text
    assert "batch 2 skipped" in text
    assert not latest_path(tmp_path / "art", "tiny-test", "cpu").exists()


def test_cli_bench_without_structures_of_that_size_is_one_line_exit_65(tmp_path, tiny_checkpoint, calib_file):
    result = subprocess.run([sys.executable, "-m", "deploycc", "bench", "--model", str(tiny_checkpoint), "--target",
                             "eager", "--atoms", "500", "--structures", str(calib_file), "--out", str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 65, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "500 ± 3 atoms" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
