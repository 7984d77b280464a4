"""Statistics of per-call wall times (percentiles, coefficient of variation), the CPU share other processes
took while measuring, and the verdict per target: speed-up over eager and whether throughput falls as batch
grows, "inconclusive" (never "FALLS") on noisy timings, a busy machine, or a fall not seen in every round."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from .measure import BenchRecord

NOISY_CV = 0.25  # a coefficient of variation above this makes comparisons between runs inconclusive
BUSY_SHARE = 0.25  # other processes keeping more than this share of the cores busy while measuring: busy
DROP_RATIO = 0.9  # throughput below this fraction of the best smaller batch: flagged


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


@dataclass(frozen=True)
class CpuSample:
    """Busy CPU seconds of the whole machine (None where /proc/stat is unreadable) and of this process with its
    finished children, at one moment."""

    machine: float | None
    ours: float
    wall: float
    cores: int


def cpu_sample() -> CpuSample:
    """The machine's and our own busy CPU seconds now (user, nice, system, irq, softirq and steal time)."""
    ours = 0.0
    try:
        import resource

        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            ours += usage.ru_utime + usage.ru_stime
    except ImportError:  # not a Unix
        pass
    machine, cores = None, os.cpu_count() or 1
    try:
        lines = Path("/proc/stat").read_text().splitlines()
        ticks = [int(x) for x in lines[0].split()[1:9]]
        machine = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
        cores = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit()) or cores
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    return CpuSample(machine, ours, time.monotonic(), cores)


def others_share(before: CpuSample, after: CpuSample) -> float | None:
    """The share (0..1) of the machine's cores that other processes kept busy between two samples; None when
    unknown. Our worker processes count as ours once they have been waited for."""
    wall = after.wall - before.wall
    if before.machine is None or after.machine is None or wall <= 0:
        return None
    others = (after.machine - before.machine) - (after.ours - before.ours)
    return min(1.0, max(0.0, others / (wall * after.cores)))


def merge_rounds(rounds: Sequence[Sequence[BenchRecord]]) -> list[BenchRecord]:
    """One record per (target, batch size, mode, device) over repeated rounds: the round of median median time
    (the faster middle one of an even count), in first-seen order."""
    groups: dict[tuple[str, int, str, str], list[BenchRecord]] = {}
    for records in rounds:
        for r in records:
            groups.setdefault((r.target, r.batch_size, r.mode, r.device), []).append(r)
    return [sorted(group, key=lambda r: r.median_ms)[(len(group) - 1) // 2] for group in groups.values()]


@dataclass
class TargetSummary:
    """Speed-up over eager (same device and mode) and whether throughput ever falls as batch grows; a fall
    seen on noisy timings (CV above NOISY_CV), on a busy machine, or not in every round is inconclusive."""

    target: str
    mode: str
    device: str
    small_batch: int | None = None
    speedup_small: float | None = None  # vs eager, throughput ratio at the smallest common batch (1 normally)
    large_batch: int | None = None
    speedup_large: float | None = None  # at the largest batch both measured
    drops: list[dict[str, float]] = field(default_factory=list)  # {batch, structures_per_s, best_batch, best}
    inconclusive: bool = False  # the drops cannot be trusted: see `reasons`
    reasons: list[str] = field(default_factory=list)  # why inconclusive

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
            worst = ", ".join(f"batch {int(d['batch'])} {d['structures_per_s']:.0f}/s < {DROP_RATIO:g} × batch "
                              f"{int(d['best_batch'])} {d['best']:.0f}/s" for d in self.drops)
            verdict = (f"inconclusive ({'; '.join(self.reasons)}): cannot tell whether throughput falls"
                       if self.inconclusive else "throughput FALLS as batch grows")
            parts.append(f"{verdict} ({worst})")
        else:
            parts.append("throughput never falls as batch grows")
        return " ".join(parts)


def _doubts(rows: dict[int, BenchRecord], b: int, best_batch: int, busy: bool,
            per_round: Sequence[dict[int, float]]) -> list[str]:
    """Why a fall from `best_batch` to `b` cannot be trusted (empty: it can)."""
    doubts = ["machine busy"] if busy else []
    if max(rows[b].cv, rows[best_batch].cv) > NOISY_CV:
        doubts.append(f"timings noisy: CV above {100 * NOISY_CV:.0f}%")
    seen = [curve[b] < DROP_RATIO * curve[best_batch] for curve in per_round if b in curve and best_batch in curve]
    if len(seen) > 1 and not all(seen):
        doubts.append(f"seen in {sum(seen)} of {len(seen)} rounds")
    return doubts


def summarize_targets(records: Sequence[BenchRecord], baseline: str = "eager", busy: bool = False,
                      rounds: Sequence[Sequence[BenchRecord]] = ()) -> list[TargetSummary]:
    """One summary per (target, mode, device), in first-seen order; `rounds`, the records of each round when
    the sweep was repeated, must each show a fall for it to count."""
    groups: dict[tuple[str, str, str], dict[int, BenchRecord]] = {}
    for r in records:
        groups.setdefault((r.target, r.mode, r.device), {})[r.batch_size] = r
    out = []
    for key, rows in groups.items():
        curve = {b: r.structures_per_s for b, r in rows.items()}
        summary = TargetSummary(*key)
        base = {b: r.structures_per_s for b, r in groups.get((baseline, key[1], key[2]), {}).items()}
        common = sorted(set(curve) & set(base))
        if common:
            summary.small_batch, summary.large_batch = common[0], common[-1]
            summary.speedup_small = curve[common[0]] / base[common[0]]
            summary.speedup_large = curve[common[-1]] / base[common[-1]]
        per_round = [{r.batch_size: r.structures_per_s for r in records if (r.target, r.mode, r.device) == key}
                     for records in rounds]
        best_batch, best = None, 0.0
        for b in sorted(curve):
            if best_batch is not None and curve[b] < DROP_RATIO * best:
                summary.drops.append({"batch": b, "structures_per_s": curve[b], "best_batch": best_batch,
                                      "best": best})
                doubts = _doubts(rows, b, best_batch, busy, per_round)
                summary.reasons += [d for d in doubts if d not in summary.reasons]
            if curve[b] > best:
                best_batch, best = b, curve[b]
        summary.inconclusive = bool(summary.reasons)
        out.append(summary)
    return out
