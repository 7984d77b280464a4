"""Benchmark built artifacts like trtexec: latency percentiles, throughput and peak memory per batch size.

`run_bench(config)` builds (or takes from the cache) one artifact per target and measures each in its own
process (`python -m deploycc.bench_worker`), so targets share no allocator or thread-pool state. Inside a
worker, `measure_runner` times `runner.predict` on padded batches of calibration molecules of about
`config.atoms` atoms, rotating through a pool of rattled copies so that no call sees the previous call's input.

Nothing here prints: results are dataclasses; `to_markdown`, `table_rows` and `plot` render them.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .errors import DeployccError, MissingDependencyError, UserInputError, UnsupportedModelError

Event = Callable[[str], None]

#: JSON keys of every record (the documented interface; extra keys follow them).
RECORD_KEYS = ("target", "batch_size", "atoms", "median_ms", "p90_ms", "p99_ms", "mean_ms", "cv",
               "structures_per_s", "atoms_per_s", "peak_mem_mb", "mode", "device", "enqueue_bound")
ENQUEUE_BOUND_RATIO = 0.9  # un-synchronized / synchronized call time at or above this: enqueue-bound
DROP_RATIO = 0.9  # throughput below this fraction of the best smaller batch: flagged
RATTLE_SIGMA = 0.01  # Å
MEMORY_NOTE = ("peak_mem_mb: growth above the memory in use just before each batch size (model and input pool "
               "excluded) - on cpu the process peak RSS (VmHWM, reset per batch size; ru_maxrss where it cannot "
               "be reset), on cuda torch.cuda.max_memory_allocated (PyTorch's allocator only: memory that ONNX "
               "Runtime or TensorRT allocate themselves is not counted)")


# --------------------------------------------------------------------------------------------- statistics


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


# ---------------------------------------------------------------------------------------------- workload


def select_structures(sizes: Sequence[int], atoms: int, window: int = 3, fallback: int = 8) -> np.ndarray:
    """Indices of structures with |size - atoms| <= window; when there are none, the `fallback` nearest sizes."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if len(sizes) == 0:
        raise UserInputError("no structures to benchmark with")
    distance = np.abs(sizes - int(atoms))
    near = np.flatnonzero(distance <= window)
    if len(near):
        return near
    return np.argsort(distance, kind="stable")[:fallback]


@dataclass
class Workload:
    """The molecules a sweep uses: chosen once, padded to one width for every batch size."""

    numbers: list[np.ndarray]
    positions: list[np.ndarray]
    n_atoms: int  # padded width N
    target_atoms: int
    source: str = ""
    cells: list[np.ndarray] | None = None  # periodic workloads: cells [3, 3] and pbc flags [3] per structure
    pbc: list[np.ndarray] | None = None

    @property
    def periodic(self) -> bool:
        return self.pbc is not None and bool(np.any(self.pbc))

    @property
    def mean_atoms(self) -> float:
        return float(np.mean([len(z) for z in self.numbers]))

    def describe(self) -> dict[str, Any]:
        sizes = [len(z) for z in self.numbers]
        described = {"source": self.source, "target_atoms": self.target_atoms, "structures": len(sizes),
                     "min_atoms": int(min(sizes)), "max_atoms": int(max(sizes)),
                     "mean_atoms": round(self.mean_atoms, 2), "padded_atoms": self.n_atoms}
        if self.periodic:
            described["periodic"] = int(sum(bool(np.any(p)) for p in self.pbc))
        return described


def make_workload(numbers: Sequence[np.ndarray], positions: Sequence[np.ndarray], atoms: int, window: int = 3,
                  seed: int = 0, source: str = "", cells: Sequence[np.ndarray] | None = None,
                  pbc: Sequence[np.ndarray] | None = None) -> Workload:
    """Pick structures of about `atoms` atoms (see `select_structures`) in a seeded order."""
    chosen = select_structures([len(z) for z in numbers], atoms, window)
    chosen = np.random.default_rng(seed).permutation(chosen)
    picked_z = [np.asarray(numbers[i], dtype=np.int64) for i in chosen]
    picked_r = [np.asarray(positions[i], dtype=np.float64) for i in chosen]
    periodic = pbc is not None and bool(np.any([pbc[i] for i in chosen]))
    picked_cells = [np.asarray(cells[i], dtype=np.float64) for i in chosen] if periodic else None
    picked_pbc = [np.asarray(pbc[i], dtype=bool) for i in chosen] if periodic else None
    return Workload(picked_z, picked_r, max(len(z) for z in picked_z), int(atoms), source, picked_cells, picked_pbc)


def load_workload(atoms: int, path: Path | None = None, seed: int = 0, periodic: bool = False) -> Workload:
    """A workload from a structure file (default: the calibration molecules, or metals when `periodic`)."""
    from .data.schema import read_structures
    from .paths import default_calib_file

    path = Path(path) if path else default_calib_file(periodic)
    data = read_structures(path)
    return make_workload(data.numbers, data.positions, atoms, seed=seed, source=str(path), cells=data.cells,
                         pbc=data.pbc)


class InputPool:
    """Distinct padded batches, handed out in rotation: consecutive calls never get the same input."""

    def __init__(self, entries: list[tuple[torch.Tensor, ...]], atoms_per_structure: float) -> None:
        """entries: (numbers, positions) or, for periodic workloads, (numbers, positions, cell, pbc)."""
        if len(entries) < 2:
            raise ValueError("an input pool needs at least two entries")
        self.entries = entries
        self.atoms_per_structure = atoms_per_structure
        self._next = 0

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def batch_size(self) -> int:
        return int(self.entries[0][0].shape[0])

    def next(self) -> tuple[torch.Tensor, ...]:
        entry = self.entries[self._next]
        self._next = (self._next + 1) % len(self.entries)
        return entry

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        while True:
            yield self.next()

    def to(self, device: str) -> "InputPool":
        moved = [tuple(t.to(device) for t in entry) for entry in self.entries]
        return InputPool(moved, self.atoms_per_structure)


def make_pool(workload: Workload, batch_size: int, copies: int = 8, sigma: float = RATTLE_SIGMA,
              seed: int = 0) -> InputPool:
    """`copies` (>= 8 recommended) batches of `batch_size` molecules cycled from the workload, each molecule
    rattled independently (Gaussian, `sigma` Å) and padded to the workload's width; copy k starts k batches
    further along the cycle, so small batches also vary the molecules."""
    from .batching import pad
    from .periodic import pad_cells

    if batch_size < 1:
        raise UserInputError(f"batch size must be positive, got {batch_size}")
    copies = max(2, int(copies))
    rng = np.random.default_rng([seed, batch_size])
    m = len(workload.numbers)
    entries, atoms = [], []
    for k in range(copies):
        picks = [(k * batch_size + j) % m for j in range(batch_size)]
        numbers = [workload.numbers[i] for i in picks]
        positions = [workload.positions[i] + rng.normal(0.0, sigma, size=workload.positions[i].shape)
                     for i in picks]
        entry = pad(numbers, positions, workload.n_atoms)
        if workload.periodic:
            entry = (*entry, *pad_cells([workload.cells[i] for i in picks], [workload.pbc[i] for i in picks], len(picks)))
        entries.append(entry)
        atoms.extend(len(z) for z in numbers)
    return InputPool(entries, float(np.mean(atoms)))


# -------------------------------------------------------------------------------------------- measurement


def _proc_status_kib(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_kib() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


class MemoryProbe:
    """Peak memory growth over one measured span: CPU RSS, or PyTorch's CUDA allocator."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.device = device
        self.method = ""
        self.baseline = 0
        self._resettable = False

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return
        self._resettable = _reset_peak_rss() and _proc_status_kib("VmHWM") is not None
        rss = _proc_status_kib("VmRSS")
        if self._resettable and rss is not None:
            self.baseline, self.method = rss * 1024, "VmHWM"
        else:  # a never-reset high-water mark: growth shows only when this span sets a new peak
            self.baseline, self.method = _ru_maxrss_kib() * 1024, "ru_maxrss"

    def stop(self) -> tuple[float, float]:
        """(growth over the baseline, absolute peak), both in MB."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._resettable:
            peak = (_proc_status_kib("VmHWM") or 0) * 1024
        else:
            peak = _ru_maxrss_kib() * 1024
        return max(0, peak - self.baseline) / 1e6, peak / 1e6


@dataclass
class BenchRecord:
    """One (target, batch size, mode) measurement. `cv` is a fraction; throughputs are from the median."""

    target: str
    batch_size: int
    atoms: float  # real atoms per structure (mean over the input pool)
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    cv: float
    structures_per_s: float
    atoms_per_s: float
    peak_mem_mb: float
    mode: str  # host | device
    device: str
    enqueue_bound: bool | None  # None where not measured (cpu, host mode)
    enqueue_ratio: float | None = None  # un-synchronized / synchronized median call time
    warning: str | None = None
    padded_atoms: int = 0
    iterations: int = 0
    seconds: float = 0.0
    min_ms: float = 0.0
    max_ms: float = 0.0
    peak_total_mb: float = 0.0
    memory_method: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MeasureSettings:
    warmup: int = 10
    min_iters: int = 50
    min_seconds: float = 1.0
    pool: int = 8
    seed: int = 0


def modes_for(device: str) -> tuple[str, ...]:
    """'host' (CPU tensors in and out) everywhere; on CUDA also 'device' (tensors stay on the GPU)."""
    return ("device", "host") if device.startswith("cuda") else ("host",)


def _caller(runner, mode: str, cuda: bool) -> Callable[..., Any]:
    if mode == "host" and cuda:
        def call(*inputs):
            energy, forces = runner.predict(*inputs)
            out = energy.cpu(), forces.cpu()
            runner.synchronize()
            return out
        return call
    if cuda:
        def call_synced(*inputs):
            out = runner.predict(*inputs)
            runner.synchronize()
            return out
        return call_synced
    return runner.predict


def time_calls(call: Callable, pool: InputPool, warmup: int, min_iters: int, min_seconds: float) -> list[float]:
    """Per-call wall times (s): `warmup` untimed calls, then at least `min_iters` calls and `min_seconds` s."""
    for _ in range(max(0, warmup)):
        call(*pool.next())
    times: list[float] = []
    clock = time.perf_counter
    started = clock()
    while len(times) < max(1, min_iters) or clock() - started < min_seconds:
        inputs = pool.next()
        t0 = clock()
        call(*inputs)
        times.append(clock() - t0)
    return times


def time_enqueue(runner, pool: InputPool, iterations: int) -> list[float]:
    """Per-call times of `predict` alone on device inputs, synchronizing after each call outside the timing."""
    times: list[float] = []
    clock = time.perf_counter
    for _ in range(max(1, iterations)):
        inputs = pool.next()
        t0 = clock()
        runner.predict(*inputs)
        times.append(clock() - t0)
        runner.synchronize()
    return times


def measure_batch(runner, target: str, pool: InputPool, device: str, mode: str,
                  settings: MeasureSettings) -> BenchRecord:
    """Warm up, time and summarize one batch size in one mode."""
    cuda = device.startswith("cuda")
    inputs = pool.to(device) if mode == "device" else pool
    call = _caller(runner, mode, cuda)
    memory = MemoryProbe(device)
    gc.collect()
    memory.start()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter()
        times = time_calls(call, inputs, settings.warmup, settings.min_iters, settings.min_seconds)
        seconds = time.perf_counter() - started
        ratio = None
        if cuda and mode == "device":
            enqueue = time_enqueue(runner, inputs, min(len(times), max(10, settings.min_iters)))
            ratio = percentile(enqueue, 50) / max(percentile(times, 50), 1e-12)
    finally:
        if gc_was_enabled:
            gc.enable()
    growth, total = memory.stop()
    stats = summarize_times(times)
    b = pool.batch_size
    per_s = b / (stats.median_ms / 1e3) if stats.median_ms > 0 else float("inf")
    bound = None if ratio is None else bool(ratio >= ENQUEUE_BOUND_RATIO)
    warning = None
    if bound:
        warning = (f"enqueue-bound: the un-synchronized call takes {100 * ratio:.0f}% of the synchronized time "
                   "(host launch overhead or a blocking call; the GPU waits on the CPU)")
    return BenchRecord(target=target, batch_size=b, atoms=round(pool.atoms_per_structure, 2),
                       median_ms=stats.median_ms, p90_ms=stats.p90_ms, p99_ms=stats.p99_ms, mean_ms=stats.mean_ms,
                       cv=stats.cv, structures_per_s=per_s, atoms_per_s=per_s * pool.atoms_per_structure,
                       peak_mem_mb=growth, mode=mode, device=device, enqueue_bound=bound, enqueue_ratio=ratio,
                       warning=warning, padded_atoms=int(pool.entries[0][0].shape[1]), iterations=stats.n,
                       seconds=seconds, min_ms=stats.min_ms, max_ms=stats.max_ms, peak_total_mb=total,
                       memory_method=memory.method)


def measure_runner(runner, target: str, workload: Workload, batch_sizes: Sequence[int], device: str,
                   settings: MeasureSettings = MeasureSettings(), modes: Sequence[str] | None = None,
                   batch_limits: tuple[int, int] | None = None, max_atoms: int | None = None,
                   on_event: Event = lambda message: None) -> tuple[list[BenchRecord], list[str]]:
    """Sweep batch sizes on an open runner (in this process). Returns (records, notices about skipped sizes)."""
    records: list[BenchRecord] = []
    notices: list[str] = []
    if max_atoms is not None and workload.n_atoms > max_atoms:
        return [], [f"{target}: {workload.n_atoms} atoms per structure is above the artifact's atoms profile "
                    f"max {max_atoms}; nothing measured"]
    for b in sorted(set(int(x) for x in batch_sizes)):
        if batch_limits is not None and not batch_limits[0] <= b <= batch_limits[1]:
            notices.append(f"{target}: batch {b} skipped, outside the artifact's batch profile "
                           f"{batch_limits[0]}..{batch_limits[1]}")
            continue
        pool = make_pool(workload, b, settings.pool, seed=settings.seed)
        for mode in modes or modes_for(device):
            on_event(f"batch {b} ({mode})")
            try:
                records.append(measure_batch(runner, target, pool, device, mode, settings))
            except torch.cuda.OutOfMemoryError:
                notices.append(f"{target}: batch {b} ({mode}) ran out of GPU memory; larger batches skipped")
                torch.cuda.empty_cache()
                return records, notices
            except RuntimeError as exc:
                text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                notices.append(f"{target}: batch {b} ({mode}) failed: {text}")
                if "out of memory" in text.lower():
                    return records, notices
        del pool
    return records, notices


# ----------------------------------------------------------------------------------------------- driver


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

    def validate(self) -> None:
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise UserInputError(f"batch sizes must be positive integers, got {list(self.batch_sizes)}")
        if self.atoms < 1:
            raise UserInputError(f"--atoms must be positive, got {self.atoms}")
        if self.threads < 1:
            raise UserInputError(f"--threads must be positive, got {self.threads}")
        if self.min_iters < 1 or self.min_seconds < 0 or self.warmup < 0:
            raise UserInputError("--min-iters must be >= 1, --min-seconds and --warmup >= 0")
        if self.pool < 8:
            raise UserInputError(f"the input pool needs at least 8 distinct batches, got {self.pool}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise UserInputError(f"--device must be cpu or cuda, got '{self.device}'")


@dataclass
class TargetSummary:
    """Speed-up over eager (same device and mode) and whether throughput ever falls as batch grows."""

    target: str
    mode: str
    device: str
    small_batch: int | None = None
    speedup_small: float | None = None  # vs eager, throughput ratio at the smallest common batch (1 normally)
    large_batch: int | None = None
    speedup_large: float | None = None  # at the largest batch both measured
    drops: list[dict[str, float]] = field(default_factory=list)  # {batch, structures_per_s, best_batch, best}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        parts = [f"{self.target} ({self.mode}, {self.device}):"]
        if self.speedup_small is not None:
            parts.append(f"{self.speedup_small:.2f}× eager at batch {self.small_batch},")
            parts.append(f"{self.speedup_large:.2f}× at batch {self.large_batch};")
        else:
            parts.append("no eager baseline to compare with;")
        if self.drops:
            worst = ", ".join(f"batch {int(d['batch'])} {d['structures_per_s']:.0f}/s < 0.9 × batch "
                              f"{int(d['best_batch'])} {d['best']:.0f}/s" for d in self.drops)
            parts.append(f"throughput FALLS as batch grows ({worst})")
        else:
            parts.append("throughput never falls as batch grows")
        return " ".join(parts)


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
        from .artifacts import write_json

        write_json(Path(path), self.to_dict())

    @property
    def warnings(self) -> list[str]:
        """The header's busy-machine warning and every record's warning (enqueue-bound), one line each."""
        busy = [self.header["busy_warning"]] if self.header.get("busy_warning") else []
        return busy + [f"{r.target} batch {r.batch_size} ({r.mode}): {r.warning}" for r in self.records if r.warning]


def summarize_targets(records: Sequence[BenchRecord], baseline: str = "eager") -> list[TargetSummary]:
    """One summary per (target, mode, device), in first-seen order."""
    groups: dict[tuple[str, str, str], dict[int, float]] = {}
    for r in records:
        groups.setdefault((r.target, r.mode, r.device), {})[r.batch_size] = r.structures_per_s
    out = []
    for (target, mode, device), curve in groups.items():
        summary = TargetSummary(target, mode, device)
        base = groups.get((baseline, mode, device))
        common = sorted(set(curve) & set(base)) if base else []
        if common:
            summary.small_batch, summary.large_batch = common[0], common[-1]
            summary.speedup_small = curve[common[0]] / base[common[0]]
            summary.speedup_large = curve[common[-1]] / base[common[-1]]
        best_batch, best = None, 0.0
        for b in sorted(curve):
            if best_batch is not None and curve[b] < DROP_RATIO * best:
                summary.drops.append({"batch": b, "structures_per_s": curve[b], "best_batch": best_batch,
                                      "best": best})
            if curve[b] > best:
                best_batch, best = b, curve[b]
        out.append(summary)
    return out


def resolve_targets(spec: str | Sequence[str]) -> tuple[list[str], bool]:
    """(names, skip_unavailable): 'all' lists every registered target and skips those unavailable here;
    named targets must exist (else the registry's error) and must be available."""
    from .targets.base import get_target, registered

    if isinstance(spec, str):
        if spec.strip() == "all":
            return list(registered()), True
        names = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        names = [str(s) for s in spec]
    if not names:
        raise UserInputError("no targets given")
    for name in names:
        get_target(name)
    return list(dict.fromkeys(names)), False


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def make_header(config: BenchConfig, model: str | None = None, workload: Workload | None = None) -> dict[str, Any]:
    from .versions import library_versions

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
        "rattle_sigma_angstrom": RATTLE_SIGMA,
        "modes": list(modes_for(config.device)),
        "memory": MEMORY_NOTE,
    }


def worker_command(folder: Path, config: BenchConfig, result_file: Path) -> list[str]:
    """The command line of one measuring process."""
    command = [sys.executable, "-m", "deploycc.bench_worker", "--artifact", str(Path(folder).resolve()),
               "--device", config.device, "--threads", str(config.threads),
               "--batch-sizes", ",".join(str(int(b)) for b in config.batch_sizes), "--atoms", str(config.atoms),
               "--min-iters", str(config.min_iters), "--min-seconds", repr(float(config.min_seconds)),
               "--warmup", str(config.warmup), "--pool", str(config.pool), "--seed", str(config.seed),
               "--result", str(result_file)]
    if config.structures:
        command += ["--structures", str(Path(config.structures).resolve())]
    return command


def worker_env(threads: int) -> dict[str, str]:
    """The environment of a measuring process: thread counts fixed before any library starts its pools."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    package_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_parent] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_worker(folder: Path, target: str, config: BenchConfig, on_event: Event = lambda m: None) -> dict[str, Any]:
    """Measure one artifact in a fresh process; its JSON result ({records, notices, info})."""
    with tempfile.TemporaryDirectory(prefix="deploycc-bench-") as tmp:
        result_file = Path(tmp) / "result.json"
        log_file = Path(tmp) / "stderr.txt"
        with open(log_file, "w") as log:
            process = subprocess.Popen(worker_command(folder, config, result_file), env=worker_env(config.threads),
                                       stdout=subprocess.PIPE, stderr=log, text=True)
            deadline = None if config.worker_timeout is None else time.monotonic() + config.worker_timeout
            assert process.stdout is not None
            for line in process.stdout:
                if line.strip():
                    on_event(f"{target}: {line.strip()}")
                if deadline is not None and time.monotonic() > deadline:
                    process.kill()
                    break
            code = process.wait()
        stderr = log_file.read_text(errors="replace")
        if code != 0 or not result_file.is_file():
            tail = " | ".join(stderr.strip().splitlines()[-3:]) or "no output"
            raise DeployccError(f"bench worker for {target} failed (exit {code}): {tail}")
        return json.loads(result_file.read_text())


def run_bench(config: BenchConfig, on_event: Event = lambda message: None) -> BenchResult:
    """Build (or reuse) each target's artifact, measure each in its own process, summarize."""
    from .pipeline import build

    config.validate()
    names, skip_unavailable = resolve_targets(config.targets)
    from .checkpoint import load_checkpoint

    periodic = load_checkpoint(config.model).config.periodic
    workload = load_workload(config.atoms, config.structures, config.seed, periodic)  # fail early on a bad file
    notices: list[str] = []
    built = []
    for name in names:
        on_event(f"{name}: build")
        try:
            result = build(config.model, name, config.out, config.device, calib=config.calib,
                           stage=lambda s, n=name: on_event(f"{n}: {s}"))
        except (MissingDependencyError, UnsupportedModelError) as exc:
            if not skip_unavailable:
                raise
            notices.append(f"skipped {name}: {exc}")
            continue
        built.append(result)
    model_name = built[0].model if built else None
    header = make_header(config, model_name, workload)
    header["artifacts"] = {r.target: str(r.folder) for r in built}
    header["checkpoint_sha256"] = {r.target: r.manifest.get("checkpoint", {}).get("sha256") for r in built}
    records: list[BenchRecord] = []
    for result in built:
        on_event(f"{result.target}: starting worker")
        payload = run_worker(result.folder, result.target, config, on_event)
        records.extend(BenchRecord(**r) for r in payload["records"])
        notices.extend(payload.get("notices", []))
        header.setdefault("workers", {})[result.target] = payload.get("info", {})
        if header["gpu"] is None and payload.get("info", {}).get("gpu"):
            header["gpu"] = payload["info"]["gpu"]
    result = BenchResult(header, records, summarize_targets(records), notices)
    if records:
        save_latest(result, config.out)
    return result


def latest_path(root: Path | None, model: str, device: str) -> Path:
    """Where the latest bench of `model` on `device` is kept: <root>/<model>/bench/latest-<device>.json."""
    from .paths import artifacts_root

    safe_device = re.sub(r"[^A-Za-z0-9_.-]", "-", device)
    return Path(root or artifacts_root()) / model / "bench" / f"latest-{safe_device}.json"


def save_latest(result: BenchResult, root: Path | None) -> Path:
    """Keep `result` as the latest bench of its model and device (atomic replace); returns the path."""
    path = latest_path(root, str(result.header["model"]), str(result.header["device"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    result.write_json(path)
    return path


# ---------------------------------------------------------------------------------------------- reports


def table_rows(result: BenchResult) -> tuple[list[str], list[list[str]]]:
    """Column names and formatted rows (one per record); a mode column only when there are several modes."""
    with_mode = len({r.mode for r in result.records}) > 1
    columns = ["target"] + (["mode"] if with_mode else []) + [
        "batch", "atoms/structure", "median ms", "p90 ms", "p99 ms", "CV %", "structures/s", "atoms/s", "peak MB"]
    rows = []
    for r in result.records:
        row = [r.target] + ([r.mode] if with_mode else []) + [
            str(r.batch_size), f"{r.atoms:.1f}", _ms(r.median_ms), _ms(r.p90_ms), _ms(r.p99_ms),
            f"{100 * r.cv:.1f}", _rate(r.structures_per_s), _rate(r.atoms_per_s), f"{r.peak_mem_mb:.1f}"]
        rows.append(row)
    return columns, rows


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def header_lines(header: dict[str, Any]) -> list[str]:
    """Short human lines describing the machine and the run."""
    versions = header.get("library_versions", {})
    libs = ", ".join(f"{k} {v}" for k, v in versions.items() if k in ("torch", "onnxruntime", "onnxruntime-gpu",
                                                                        "tensorrt", "numpy", "python", "deploycc"))
    lines = [f"model: {header.get('model')}, device: {header.get('device')}",
             f"CPU: {header.get('cpu')} ({header.get('logical_cores')} logical cores, "
             f"{header.get('cores_available')} available), {header.get('threads')} threads per target"]
    if header.get("gpu"):
        lines.append(f"GPU: {header['gpu']}")
    if header.get("load_average"):
        lines.append(f"load average at start: {', '.join(str(x) for x in header['load_average'])}")
    work = header.get("workload") or {}
    if work:
        kind = f"periodic structures ({work['periodic']} periodic)" if work.get("periodic") else "molecules"
        lines.append(f"workload: {work.get('structures')} {kind} of {work.get('min_atoms')}-{work.get('max_atoms')} "
                     f"atoms (mean {work.get('mean_atoms')}), padded to {work.get('padded_atoms')}; "
                     f"{header.get('input_pool')} rattled copies per batch (σ {header.get('rattle_sigma_angstrom')} Å)")
    lines.append(f"timing: {header.get('warmup')} warm-up calls, then >= {header.get('min_iters')} calls and "
                 f">= {header.get('min_seconds')} s per batch size; modes: {', '.join(header.get('modes', []))}")
    lines.append(f"libraries: {libs}")
    return lines


def to_markdown(result: BenchResult) -> str:
    """The table with the header lines, per-target summary lines, warnings and notices."""
    columns, rows = table_rows(result)
    out = [f"# deploycc bench: {result.header.get('model')}", ""]
    out += [f"- {line}" for line in header_lines(result.header)]
    out += ["", "| " + " | ".join(columns) + " |",
            "|" + "|".join("---" if k < (2 if "mode" in columns else 1) else "---:" for k in range(len(columns))) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    if result.summaries:
        out += ["", "## Summary", ""] + [f"- {s.line()}" for s in result.summaries]
    if result.warnings:
        out += ["", "## Warnings", ""] + [f"- {w}" for w in result.warnings]
    if result.notices:
        out += ["", "## Notices", ""] + [f"- {n}" for n in result.notices]
    out += ["", f"_{MEMORY_NOTE}._", ""]
    return "\n".join(out)


def plot(result: BenchResult, path: Path) -> Path:
    """Latency and throughput vs batch size as a PNG (see deploycc.bench_plot)."""
    from .bench_plot import plot_result

    return plot_result(result, path)
