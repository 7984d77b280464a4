"""Interleaved timing of TorchScript executor settings against ONNX Runtime on batches of ~25-atom molecules.

Each TorchScript variant is its own scripted module of the preset (its own graph executor) with its own JIT
flags and thread count, set before each of its calls and restored after (the flags are process-global; the
executor kind is fixed when a method's executor is created, on its first call).  Every round calls each
variant once, in a fresh random order, with an idle pause after every call (ONNX Runtime's workers spin after
a run and would slow whichever OpenMP call came next); inputs are the bench's pool (8 rattled molecules of
22-28 atoms per structure, cycled, so shapes vary from call to call as in `deploycc bench`), --fixed: one
input only.  `runner` and `onnx` are the built artifacts (`deploycc build --model tiny --target
torchscript,onnx`), opened as `deploycc bench` opens them.
Usage: python lab/ts_speed.py [--calls 800] [--batches 1,8] [--fixed] [--variants ts,ts+noopt+t1,runner,onnx]
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from deploycc.bench.workload import load_workload, make_pool
from deploycc.checkpoint import load_checkpoint
from deploycc.model import EnergyForcesVirials
from deploycc.paths import default_calib_file
from deploycc.targets.base import ModuleRunner, Runner, get_target

TS = Path("artifacts/tiny/torchscript/model.ts")
ONNX = Path("artifacts/tiny/onnx/model.onnx")
DEFAULT_FLAGS: dict[str, Any] = {"executor": True, "mode": True, "optimize": True, "texpr": True,
                                 "strategy": [("STATIC", 2), ("DYNAMIC", 10)]}


@dataclass
class Variant:
    """One timed configuration: a runner, the JIT flags around its calls, its call times (s)."""

    name: str
    runner: Runner
    flags: dict[str, Any] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)


def set_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """Apply JIT flags; return the previous values (for restoring)."""
    old: dict[str, Any] = {}
    if "executor" in flags:
        old["executor"] = torch._C._jit_set_profiling_executor(flags["executor"])
    if "mode" in flags:
        old["mode"] = torch._C._jit_set_profiling_mode(flags["mode"])
    if "optimize" in flags:
        old["optimize"] = torch._C._get_graph_executor_optimize()
        torch._C._set_graph_executor_optimize(flags["optimize"])
    if "texpr" in flags:
        old["texpr"] = torch._C._jit_texpr_fuser_enabled()
        torch._C._jit_set_texpr_fuser_enabled(flags["texpr"])
    if "strategy" in flags:
        old["strategy"] = torch._C._jit_set_fusion_strategy(flags["strategy"])
    if "threads" in flags:
        old["threads"] = torch.get_num_threads()
        torch.set_num_threads(flags["threads"])
    return old


@contextmanager
def flags_set(flags: dict[str, Any]) -> Iterator[None]:
    """`flags` inside, the previous values restored after."""
    old = set_flags(flags)
    try:
        yield
    finally:
        set_flags(old)


def loaded(base: str, preset: str = "tiny") -> torch.jit.ScriptModule:
    """ts: the scripted wrapper as the target exported it before freezing; freeze: torch.jit.freeze of it;
    frozen: freeze + optimize_for_inference (what the target now saves)."""
    model = load_checkpoint(preset).model.eval().set_recompute(False)
    module = torch.jit.script(EnergyForcesVirials(model)).eval()
    if base == "ts":
        return module
    module = torch.jit.freeze(module, preserved_attrs=["cutoff"])
    return torch.jit.optimize_for_inference(module) if base == "frozen" else module


FLAG_PRESETS: dict[str, dict[str, Any]] = {
    "legacy": {"executor": False, "mode": False},  # the legacy executor: plans keyed by dtype/rank, not sizes
    "noopt": {"optimize": False},  # graph executor optimize off: one plan, the graph interpreted as saved
    "static0": {"strategy": [("STATIC", 0)]},  # no specializations: the simple executor, one plan
    "dynamic": {"strategy": [("DYNAMIC", 20)]},  # fusion with symbolic shapes
    "notexpr": {"texpr": False},  # the texpr fuser off
    "t1": {"threads": 1},  # one intra-op thread for this variant's calls
}


def variant(name: str) -> Variant:
    """BASE[+PRESET...]: BASE is ts, freeze or frozen (`loaded`), runner (the torchscript target's own runner,
    its own flags) or onnx; presets are FLAG_PRESETS keys on top of the process defaults.  Every runner
    gets its target's `chunk_atoms`, as `deploycc bench` opens it."""
    base, *presets = name.split("+")
    target = get_target("onnx" if base == "onnx" else "torchscript")
    settings = target.settings()
    flags = dict(DEFAULT_FLAGS)
    for preset in presets:
        flags.update(FLAG_PRESETS[preset])
    if base == "onnx":
        runner, flags = target.runner(ONNX, settings), {}
    elif base == "runner":
        runner, flags = target.runner(TS, settings), {}
    else:
        runner = ModuleRunner(loaded(base), "cpu")
    runner.chunk_atoms = int(settings.extra.get("chunk_atoms", 0))
    return Variant(name, runner, flags)


def timed(variant: Variant, batch, settle: float = 0.0) -> float:
    """One call's wall time; then `settle` s idle (untimed), so that no variant starts while the previous
    one's pool threads still spin (ONNX Runtime's workers spin after a run and slow the next OpenMP call)."""
    with flags_set(variant.flags):
        started = time.perf_counter()
        variant.runner.infer(batch)
        elapsed = time.perf_counter() - started
    time.sleep(settle)
    return elapsed


def row(v: Variant, onnx_median: float | None) -> str:
    ms = 1e3 * np.asarray(v.times)
    med, p90, p99 = np.percentile(ms, [50, 90, 99])
    ratio = f"{med / onnx_median:.2f}" if onnx_median else "-"
    return (f"| {v.name} | {med:.2f} | {p90:.2f} | {p99:.2f} | {ms.max():.1f} | {int((ms > 50).sum())} | "
            f"{ms.sum() / 1e3:.1f} | {p99 / med:.2f} | {ratio} |")


def run(names: list[str], batch_size: int, calls: int, warmup: int, fixed: bool, copies: int, settle: float
        ) -> None:
    """Warm up, time every variant round by round, print the Markdown table."""
    pool = make_pool(load_workload(25, default_calib_file()), batch_size, 5.0, copies)
    entries = pool.entries[:1] if fixed else pool.entries
    chosen = [variant(n) for n in names]
    for k in range(warmup):
        for v in chosen:
            timed(v, entries[k % len(entries)].batch, settle)
    rng = np.random.default_rng(0)
    for k in range(calls):
        batch = entries[k % len(entries)].batch
        for i in rng.permutation(len(chosen)):  # a fresh order every round: no variant always follows another
            chosen[i].times.append(timed(chosen[i], batch, settle))
    atoms = sorted({e.batch.atoms for e in entries})
    shapes = len({(e.batch.atoms, e.batch.slots) for e in entries})
    onnx = next((float(np.median(v.times)) * 1e3 for v in chosen if v.name == "onnx"), None)
    print(f"\nbatch {batch_size}, {'one input' if fixed else f'{len(entries)} inputs cycled'} "
          f"({atoms[0]}-{atoms[-1]} atoms per call, {shapes} distinct shapes), {calls} timed calls each after "
          f"{warmup} warm-up, {torch.get_num_threads()} threads")
    print("| variant | median ms | p90 ms | p99 ms | max ms | calls > 50 ms | total s | p99/median | × onnx |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for v in chosen:
        print(row(v, onnx), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="ts,ts+legacy,ts+static0,ts+t1,frozen,frozen+noopt,runner,onnx")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--calls", type=int, default=800)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fixed", action="store_true", help="one input batch, not the cycled pool")
    parser.add_argument("--pool", type=int, default=8, help="input batches cycled (bench: 8)")
    parser.add_argument("--settle-ms", type=float, default=5.0, help="idle time after every call (untimed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for b in (int(x) for x in args.batches.split(",")):
        run(args.variants.split(","), b, args.calls, args.warmup, args.fixed, args.pool, args.settle_ms / 1e3)


if __name__ == "__main__":
    main()
