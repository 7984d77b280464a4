"""Timing one open runner: warm-up, then many calls per batch size, like trtexec; never a cached result.

'host' mode times `Runner.infer` on a prepared host batch (pair vectors, the graph, per-structure sums);
on CUDA, 'device' mode times `infer_impl` on inputs already on the GPU, synchronised after each call, and
also the un-synchronised call, to tell an enqueue-bound target (the GPU waits on the host).
"""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .memory import MemoryProbe
from .stats import percentile, summarize_times
from .workload import InputPool, PoolEntry, Workload, make_pool

Event = Callable[[str], None]
ENQUEUE_BOUND_RATIO = 0.9  # un-synchronized / synchronized call time at or above this: enqueue-bound

#: JSON keys of every record (the documented interface; extra keys follow them).
RECORD_KEYS = ("target", "batch_size", "atoms", "median_ms", "p90_ms", "p99_ms", "mean_ms", "cv",
               "structures_per_s", "atoms_per_s", "peak_mem_mb", "mode", "device", "enqueue_bound")


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
    slots: int = 0  # neighbour slots per atom of the widest pool batch
    neighbours_ms: float = 0.0  # median neighbour-list time per batch (not part of median_ms)
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


def caller(runner, mode: str, cuda: bool) -> Callable[[PoolEntry], Any]:
    """The timed call of one pool entry."""
    if mode == "device":
        def on_device(entry: PoolEntry):
            out = runner.infer_impl(entry.inputs)
            runner.synchronize()
            return out
        return on_device
    return lambda entry: runner.infer(entry.batch)


def time_calls(call: Callable, pool: InputPool, warmup: int, min_iters: int, min_seconds: float) -> list[float]:
    """Per-call wall times (s): `warmup` untimed calls, then at least `min_iters` calls and `min_seconds` s."""
    for _ in range(max(0, warmup)):
        call(pool.next())
    times: list[float] = []
    clock = time.perf_counter
    started = clock()
    while len(times) < max(1, min_iters) or clock() - started < min_seconds:
        entry = pool.next()
        t0 = clock()
        call(entry)
        times.append(clock() - t0)
    return times


def time_enqueue(runner, pool: InputPool, iterations: int) -> list[float]:
    """Per-call times of `infer_impl` alone on device inputs, synchronizing after each call outside the timing."""
    times: list[float] = []
    clock = time.perf_counter
    for _ in range(max(1, iterations)):
        entry = pool.next()
        t0 = clock()
        runner.infer_impl(entry.inputs)
        times.append(clock() - t0)
        runner.synchronize()
    return times


def _timed(runner, pool: InputPool, device: str, mode: str, settings: MeasureSettings
           ) -> tuple[list[float], float, float | None, tuple[float, float], str]:
    """(per-call times, seconds, enqueue ratio, memory (growth, peak), memory method) with the GC off."""
    inputs = pool.to(device) if mode == "device" else pool
    call = caller(runner, mode, device.startswith("cuda"))
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
        if mode == "device":
            enqueue = time_enqueue(runner, inputs, min(len(times), max(10, settings.min_iters)))
            ratio = percentile(enqueue, 50) / max(percentile(times, 50), 1e-12)
    finally:
        if gc_was_enabled:
            gc.enable()
    return times, seconds, ratio, memory.stop(), memory.method


def measure_batch(runner, target: str, pool: InputPool, device: str, mode: str,
                  settings: MeasureSettings) -> BenchRecord:
    """Warm up, time and summarize one batch size in one mode."""
    times, seconds, ratio, (growth, total), method = _timed(runner, pool, device, mode, settings)
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
                       warning=warning, slots=pool.slots, neighbours_ms=1e3 * float(np.median(pool.neighbour_seconds)),
                       iterations=stats.n, seconds=seconds, min_ms=stats.min_ms, max_ms=stats.max_ms,
                       peak_total_mb=total, memory_method=method)


def measure_runner(runner, target: str, workload: Workload, batch_sizes: Sequence[int], device: str, cutoff: float,
                   settings: MeasureSettings = MeasureSettings(), modes: Sequence[str] | None = None,
                   max_atoms: int | None = None, on_event: Event = lambda message: None
                   ) -> tuple[list[BenchRecord], list[str]]:
    """Sweep batch sizes on an open runner (in this process). Returns (records, notices about skipped sizes)."""
    records: list[BenchRecord] = []
    notices: list[str] = []
    for b in sorted(set(int(x) for x in batch_sizes)):
        if max_atoms is not None and b * workload.mean_atoms > max_atoms:
            notices.append(f"{target}: batch {b} skipped, {b} x {workload.mean_atoms:.0f} atoms is above the "
                           f"artifact's atoms profile max {max_atoms}")
            continue
        pool = make_pool(workload, b, cutoff, settings.pool, seed=settings.seed)
        largest = max(e.batch.atoms for e in pool.entries)
        if max_atoms is not None and largest > max_atoms:  # the mean fits, but not every call of the pool
            notices.append(f"{target}: batch {b} skipped, its largest call has {largest} atoms, above the "
                           f"artifact's atoms profile max {max_atoms}")
            continue
        for mode in modes or modes_for(device):
            if mode == "device" and not runner.slot_layout:
                continue  # its artifact takes systems: only the host path exists
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
