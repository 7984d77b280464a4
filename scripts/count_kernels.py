"""GPU kernels and replay time of one energy+forces call of a preset, eager step vs Inductor-fused step.

A CUDA-graph replay costs roughly (kernels x per-kernel gap), so the kernel count is what bounds the
batch-1 latency of `cuda-graph` and `cuda-graph-fused`.  For each step this prints the kernels per call,
the first call's time (Inductor compiles there), the replay of the captured graph alone (CUDA events), and
the whole runner call with device-resident inputs (pad, copy in, replay, copy out), so that graph time and
runner overhead can be told apart.  Usage (needs a CUDA GPU):
    python3 scripts/count_kernels.py [--model tiny] [--atoms 25] [--batch 1] [--iters 2000]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import torch
from torch._dynamo.utils import counters

from deploycc.checkpoint import load_checkpoint
from deploycc.targets.cuda_graph import CudaGraphRunner, eager_step
from deploycc.targets.cuda_graph_fused import fused_step
from deploycc.targets.settings import load_settings
from profile_kernels import gpu_events  # scripts/ is on the path when run as a script


def decompose_options(scope: str) -> dict:
    """Inductor options that rewrite matrix products as element-wise products + sums, so that they fuse
    with their neighbours instead of launching cuBLAS kernels.  "small": products whose weight side is
    static and < 512 wide (per-atom linear layers) and neighbour sums over < 512 atoms; "all": also the
    filter products over all pairs (dynamic sizes).  Experimental: on CPU (Inductor C++) "all" is ~6x
    slower than cuBLAS/MKL products at batch >= 8; this measures it on a GPU, where batch 1 is launch-bound."""
    from torch._inductor.fx_passes import decompose_mem_bound_mm as pass_module

    pass_module.min_first_dimension_decomposition = 1
    pass_module.max_other_dimension_decomposition = 512
    return {"post_grad_fusion_options": {"decompose_mm_pass": {"skip_dynamic_shape_dim_check": scope == "all"}},
            "fx_graph_cache": False}  # a cached graph would skip the pass, and its counter would read 0


def kernels_per_call(step, numbers: torch.Tensor, positions: torch.Tensor) -> int:
    """CUDA kernels (not memcpy/memset) recorded by the profiler during one call."""
    return sum(1 for name, _us in gpu_events(step, numbers, positions)
               if not name.lower().startswith(("memcpy", "memset")))


def median_ms(call, iters: int) -> float:
    """Median of per-call device times (CUDA events), after a warm-up."""
    for _ in range(20):
        call()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def wall_ms(call, iters: int) -> float:
    """Mean host wall time per call over back-to-back calls (one synchronize at the end)."""
    call()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        call()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--atoms", type=int, default=25)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--steps", default="eager,default", help="eager and/or torch.compile modes for the fused "
                        "step (default, max-autotune-no-cudagraphs, ...), comma-separated")
    args = parser.parse_args()
    model = load_checkpoint(args.model).model
    numbers = torch.randint(1, 9, (args.batch, args.atoms), device="cuda")
    positions = torch.randn(args.batch, args.atoms, 3, device="cuda") * 1.6
    settings = replace(load_settings("cuda-graph"), device="cuda")
    print(f"{args.model}, batch {args.batch}, {args.atoms} atoms (bucket of {-(-args.atoms // 8) * 8}), "
          f"{torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"DISABLE_ADDMM_CUDA_LT={os.environ.get('DISABLE_ADDMM_CUDA_LT', 'unset')}")
    print("| step | kernels per call | first call s | graph replay ms | runner call ms (events) "
          "| runner call ms (wall, back-to-back) | max abs force diff vs eager step (eV/Å) "
          "| matrix products decomposed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    _, reference = eager_step(model, "cuda")(numbers, positions)
    for kind in args.steps.split(","):
        name = "eager (cuda-graph)" if kind == "eager" else f"inductor {kind} (cuda-graph-fused)"
        try:
            measure(name, kind, model, numbers, positions, reference, settings, args.iters)
        except Exception as exc:  # one failing variant must not hide the others' rows
            first_line = (str(exc).splitlines() or [""])[0][:120]
            print(f"| {name} | failed: {type(exc).__name__}: {first_line} |", flush=True)


def measure(name: str, kind: str, model, numbers: torch.Tensor, positions: torch.Tensor,
            reference: torch.Tensor, settings, iters: int) -> None:
    """One table row: build the step, count its kernels, time replay and runner call, check forces."""
    counters.clear()
    start = time.perf_counter()
    if kind == "eager":
        step = eager_step(model, "cuda")
    elif kind == "freezing":  # parameters folded as constants (weight slices, concatenations, layouts)
        step = fused_step(model, "cuda", options={"freezing": True})
    elif kind.startswith("decompose-"):
        step = fused_step(model, "cuda", options=decompose_options(kind.removeprefix("decompose-")))
    else:
        step = fused_step(model, "cuda", None if kind == "default" else kind)
    step(numbers, positions)
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    kernels = kernels_per_call(step, numbers, positions)
    runner = CudaGraphRunner(step, settings, label=name)
    runner.predict(numbers, positions)
    (captured,) = runner.graphs.values()
    replay = median_ms(captured.graph.replay, iters)
    call = median_ms(lambda: runner.predict(numbers, positions), iters)
    wall = wall_ms(lambda: runner.predict(numbers, positions), iters)
    diff = (runner.predict(numbers, positions)[1] - reference).abs().max().item()
    decomposed = sum(v for k, v in counters["inductor"].items() if k.startswith("decompose_"))
    print(f"| {name} | {kernels} | {first:.1f} | {replay:.4f} | {call:.4f} | {wall:.4f} | {diff:.1e} "
          f"| {decomposed} |", flush=True)


if __name__ == "__main__":
    main()
