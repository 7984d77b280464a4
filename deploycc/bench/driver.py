"""Benchmark driver: build (or reuse) one artifact per target and measure each in its own process.

`run_bench(config)` measures every target with `python -m deploycc.bench.worker`, so targets share no
allocator or thread-pool state; each worker times its runner on pools of prepared batches of calibration
structures of about `config.atoms` atoms (deploycc/bench/workload.py, measure.py).  With `config.rounds` > 1
the sweep is repeated, the order of targets alternating (A B C, C B A, ...), so that a change of load on a
shared machine hits every target; the record of median time is kept, and a fall of throughput counts only if
every round shows it (deploycc/bench/stats.py).  Nothing here prints: results are dataclasses;
deploycc/bench/report.py renders them.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..errors import DeployccError, MissingDependencyError, UserInputError, UnsupportedModelError
from .measure import BenchRecord, modes_for
from .memory import MEMORY_NOTE
from .stats import (BUSY_SHARE, DROP_RATIO, NOISY_CV, TargetSummary, cpu_sample, merge_rounds, others_share,
                    summarize_targets)
from .workload import RATTLE_SIGMA, Workload, load_workload

__all__ = ["BenchConfig", "BenchResult", "TargetSummary", "summarize_targets", "run_bench", "latest_path",
           "save_latest", "DROP_RATIO", "NOISY_CV"]
Event = Callable[[str], None]


@dataclass
class BenchConfig:
    """What `run_bench` measures; mirrors `deploycc bench`'s options."""

    model: str = "tiny"
    targets: str | Sequence[str] = "all"  # 'all', 'a,b', or a list of names
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    atoms: int = 25
    device: str = "cpu"
    threads: int = 2
    out: Path | None = None  # artifact root
    min_iters: int = 50
    min_seconds: float = 1.0
    warmup: int = 10
    pool: int = 8
    seed: int = 0
    structures: Path | None = None  # workload molecules (default: the calibration file)
    calib: Path | None = None  # parity data for builds (default: the calibration file)
    worker_timeout: float | None = None
    rounds: int = 1  # sweeps of every target, alternating the order (ABC CBA ...): load changes hit all alike

    def validate(self) -> None:
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise UserInputError(f"batch sizes must be positive integers, got {list(self.batch_sizes)}")
        if self.atoms < 1:
            raise UserInputError(f"--atoms must be positive, got {self.atoms}")
        if self.threads < 1:
            raise UserInputError(f"--threads must be positive, got {self.threads}")
        if self.min_iters < 1 or self.min_seconds < 0 or self.warmup < 0:
            raise UserInputError("--min-iters must be >= 1, --min-seconds and --warmup >= 0")
        if self.rounds < 1:
            raise UserInputError(f"--rounds must be at least 1, got {self.rounds}")
        if self.pool < 8:
            raise UserInputError(f"the input pool needs at least 8 distinct batches, got {self.pool}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise UserInputError(f"--device must be cpu or cuda, got '{self.device}'")


@dataclass
class BenchResult:
    header: dict[str, Any]
    records: list[BenchRecord]
    summaries: list[TargetSummary] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"header": self.header, "records": [r.to_dict() for r in self.records],
                "summary": [s.to_dict() for s in self.summaries], "notices": list(self.notices)}

    def write_json(self, path: Path) -> None:
        """Write the result as JSON atomically (temporary file, then rename)."""
        from ..artifact.layout import write_json

        write_json(Path(path), self.to_dict())

    @property
    def warnings(self) -> list[str]:
        """The header's busy-machine warning and every record's warning (enqueue-bound), one line each."""
        busy = [self.header["busy_warning"]] if self.header.get("busy_warning") else []
        return busy + [f"{r.target} batch {r.batch_size} ({r.mode}): {r.warning}" for r in self.records if r.warning]


def resolve_targets(spec: str | Sequence[str]) -> tuple[list[str], bool]:
    """(names, skip_unavailable): 'all' lists every registered target and skips those unavailable here;
    named targets must exist (else the registry's error) and must be available."""
    from ..targets.base import target_names

    text = spec if isinstance(spec, str) else ",".join(str(s) for s in spec)
    return target_names(text), text.strip() == "all"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def make_header(config: BenchConfig, model: str | None = None, workload: Workload | None = None) -> dict[str, Any]:
    from ..versions import library_versions

    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count()
    gpu = None
    if config.device.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(config.device))
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    busy = None
    if load and available and load[0] > 0.5 * available:
        busy = (f"machine busy: load average {load[0]} on {available} available cores before the run; "
                "timings include contention from other processes")
    return {
        "model": model or str(config.model),
        "device": config.device,
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "cores_available": available,
        "threads": config.threads,
        "gpu": gpu,
        "load_average": load,
        "busy_warning": busy,
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "library_versions": library_versions(),
        "workload": workload.describe() if workload else None,
        "batch_sizes": sorted(set(int(b) for b in config.batch_sizes)),
        "warmup": config.warmup,
        "min_iters": config.min_iters,
        "min_seconds": config.min_seconds,
        "input_pool": config.pool,
        "rounds": config.rounds,
        "rattle_sigma_angstrom": RATTLE_SIGMA,
        "modes": list(modes_for(config.device)),
        "memory": MEMORY_NOTE,
    }


def worker_command(folder: Path, config: BenchConfig, result_file: Path, structures: Path | None = None) -> list[str]:
    """The command line of one measuring process."""
    command = [sys.executable, "-m", "deploycc.bench.worker", "--artifact", str(Path(folder).resolve()),
               "--device", config.device, "--threads", str(config.threads),
               "--batch-sizes", ",".join(str(int(b)) for b in config.batch_sizes), "--atoms", str(config.atoms),
               "--min-iters", str(config.min_iters), "--min-seconds", repr(float(config.min_seconds)),
               "--warmup", str(config.warmup), "--pool", str(config.pool), "--seed", str(config.seed),
               "--result", str(result_file)]
    if structures or config.structures:
        command += ["--structures", str(Path(structures or config.structures).resolve())]
    return command


def worker_env(threads: int) -> dict[str, str]:
    """The environment of a measuring process: thread counts fixed before any library starts its pools."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([package_parent] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_worker(folder: Path, target: str, config: BenchConfig, on_event: Event = lambda m: None,
               structures: Path | None = None) -> dict[str, Any]:
    """Measure one artifact in a fresh process; its JSON result ({records, notices, info})."""
    with tempfile.TemporaryDirectory(prefix="deploycc-bench-") as tmp:
        result_file = Path(tmp) / "result.json"
        log_file = Path(tmp) / "stderr.txt"
        command = worker_command(folder, config, result_file, structures)
        timed_out = threading.Event()
        with open(log_file, "w") as log:
            process = subprocess.Popen(command, env=worker_env(config.threads),
                                       stdout=subprocess.PIPE, stderr=log, text=True)

            def kill() -> None:  # also when the worker hangs without printing anything
                timed_out.set()
                process.kill()

            timer = None if config.worker_timeout is None else threading.Timer(config.worker_timeout, kill)
            if timer is not None:
                timer.daemon = True
                timer.start()
            try:
                assert process.stdout is not None
                for line in process.stdout:
                    if line.strip():
                        on_event(f"{target}: {line.strip()}")
                code = process.wait()
            finally:
                if timer is not None:
                    timer.cancel()
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if timed_out.is_set():
            raise DeployccError(f"bench worker for {target} timed out after {config.worker_timeout:g} s "
                                "(worker_timeout) and was stopped")
        stderr = log_file.read_text(errors="replace")
        if code != 0 or not result_file.is_file():
            tail = " | ".join(stderr.strip().splitlines()[-3:]) or "no output"
            raise DeployccError(f"bench worker for {target} failed (exit {code}): {tail}")
        return json.loads(result_file.read_text())


def run_bench(config: BenchConfig, on_event: Event = lambda message: None) -> BenchResult:
    """Build (or reuse) each target's artifact, measure each in its own process (`config.rounds` times,
    alternating the order of targets), summarize."""
    from ..checkpoint import load_checkpoint
    from ..paths import default_calib_file

    config.validate()
    names, skip_unavailable = resolve_targets(config.targets)
    checkpoint = load_checkpoint(config.model)
    structures = config.structures or default_calib_file(checkpoint.config.periodic)
    workload = load_workload(config.atoms, structures, config.seed)  # fail early on a bad file
    built, notices = _build_all(config, names, skip_unavailable, on_event)
    header = make_header(config, built[0].model if built else None, workload)
    header["structures_file"] = str(structures)
    header["artifacts"] = {r.target: str(r.folder) for r in built}
    header["checkpoint_sha256"] = {r.target: r.manifest.checkpoint.sha256 for r in built}
    before = cpu_sample()
    rounds = _measure_rounds(config, built, structures, header, notices, on_event)
    note_contention(header, others_share(before, cpu_sample()))
    records = merge_rounds(rounds)
    if not records:
        raise UserInputError("nothing was measured: " + ("; ".join(notices) or "no target was available"))
    summaries = summarize_targets(records, busy=bool(header.get("busy_warning")), rounds=rounds)
    result = BenchResult(header, records, summaries, list(dict.fromkeys(notices)))
    save_latest(result, config.out)
    return result


def _measure_rounds(config: BenchConfig, built: list, structures: Path, header: dict[str, Any], notices: list[str],
                    on_event: Event) -> list[list[BenchRecord]]:
    """The records of each round; even rounds measure the targets in reverse order."""
    rounds: list[list[BenchRecord]] = []
    for k in range(config.rounds):
        rounds.append([])
        for result in built if k % 2 == 0 else built[::-1]:
            of = f" (round {k + 1} of {config.rounds})" if config.rounds > 1 else ""
            on_event(f"{result.target}: starting worker{of}")
            payload = run_worker(result.folder, result.target, config, on_event, structures)
            rounds[-1].extend(BenchRecord(**r) for r in payload["records"])
            notices.extend(payload.get("notices", []))
            header.setdefault("workers", {})[result.target] = payload.get("info", {})
            if header["gpu"] is None and payload.get("info", {}).get("gpu"):
                header["gpu"] = payload["info"]["gpu"]
    return rounds


def note_contention(header: dict[str, Any], share: float | None) -> None:
    """Record the CPU share other processes took while measuring; above BUSY_SHARE the machine was busy."""
    header["others_cpu_share"] = None if share is None else round(share, 3)
    if share is None or share <= BUSY_SHARE:
        return
    during = f"other processes kept {100 * share:.0f}% of the cores busy while measuring"
    header["busy_warning"] = (f"{header['busy_warning']}; {during}" if header.get("busy_warning")
                              else f"machine busy: {during}; timings include contention")


def _build_all(config: BenchConfig, names: list[str], skip_unavailable: bool, on_event: Event) -> tuple[list, list[str]]:
    """Each target's artifact (built or from the cache), and notices for those skipped as unavailable."""
    from ..build import build

    built, notices = [], []
    for name in names:
        on_event(f"{name}: build")
        try:
            built.append(build(config.model, name, config.out, config.device, calib=config.calib,
                               stage=lambda s, n=name: on_event(f"{n}: {s}")))
        except (MissingDependencyError, UnsupportedModelError) as exc:
            if not skip_unavailable:
                raise
            notices.append(f"skipped {name}: {exc}")
    return built, notices


def latest_path(root: Path | None, model: str, device: str) -> Path:
    """Where the latest bench of `model` on `device` is kept: <root>/<model>/bench/latest-<device>.json."""
    from ..paths import artifacts_root

    safe_device = re.sub(r"[^A-Za-z0-9_.-]", "-", device)
    return Path(root or artifacts_root()) / model / "bench" / f"latest-{safe_device}.json"


def save_latest(result: BenchResult, root: Path | None) -> Path:
    """Keep `result` as the latest bench of its model and device (atomic replace); returns the path."""
    path = latest_path(root, str(result.header["model"]), str(result.header["device"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    result.write_json(path)
    return path


