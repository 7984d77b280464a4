"""GPU kernels and replay time of one energy+forces call of a preset, eager step vs Inductor-fused step.

A CUDA-graph replay costs roughly (kernels x per-kernel gap), so the kernel count is what bounds the
small-request latency of `cuda-graph` and `cuda-graph-fused`.  For each step this prints the kernels per
call, the first call's time (Inductor compiles there), the replay of the captured graph alone (CUDA
events), and the whole runner call with device-resident inputs (pad, copy in, replay, copy out), so that
graph time and runner overhead can be told apart.  Usage (needs a CUDA GPU):
    python3 lab/count_kernels.py [--model tiny] [--atoms 25] [--batch 1] [--iters 2000] [--steps eager,default]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from deploycc.checkpoint import load_checkpoint
from deploycc.targets.base import GraphInputs, get_target
from deploycc.targets.cuda_graph import CudaGraphRunner, eager_step
from deploycc.targets.cuda_graph_fused import fused_step
from profile_kernels import gpu_events, sample_inputs  # lab/ is on the path when run as a script


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


def measure(name: str, step, inputs: tuple[torch.Tensor, ...], reference: torch.Tensor, settings, iters: int,
            first: float) -> None:
    """One table row: kernels per call, replay and runner call time, force difference to the eager step."""
    kernels = sum(1 for n, _us in gpu_events(step, inputs) if not n.lower().startswith(("memcpy", "memset")))
    runner = CudaGraphRunner(step, settings, label=name)
    graph_inputs = GraphInputs(*inputs)
    runner.infer_impl(graph_inputs)
    (captured,) = runner.graphs.values()
    replay = median_ms(captured.graph.replay, iters)
    call = median_ms(lambda: runner.infer_impl(graph_inputs), iters)
    diff = (runner.infer_impl(graph_inputs)[1] - reference).abs().max().item()
    print(f"| {name} | {kernels} | {first:.1f} | {replay:.4f} | {call:.4f} | {diff:.1e} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--atoms", type=int, default=25)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--steps", default="eager,default", help="eager and/or torch.compile modes of the fused "
                        "step (default, max-autotune-no-cudagraphs, ...), comma-separated")
    args = parser.parse_args()
    model = load_checkpoint(args.model).model
    inputs = sample_inputs(args.atoms, args.batch, model.cutoff)
    settings = replace(get_target("cuda-graph").settings("cuda"))
    print(f"{args.model}, batch {args.batch} x ~{args.atoms} atoms ({inputs[0].shape[0]} atoms, "
          f"{inputs[2].shape[1]} slots), {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| step | kernels per call | first call s | graph replay ms | runner call ms | max |ΔF| vs eager (eV/Å) |")
    print("|---|---:|---:|---:|---:|---:|")
    reference = eager_step(model, "cuda")(*inputs)[1]
    for kind in args.steps.split(","):
        name = "eager (cuda-graph)" if kind == "eager" else f"inductor {kind} (cuda-graph-fused)"
        try:
            start = time.perf_counter()
            step = eager_step(model, "cuda") if kind == "eager" else fused_step(model, "cuda", None if kind == "default" else kind)
            step(*inputs)
            torch.cuda.synchronize()
            measure(name, step, inputs, reference, settings, args.iters, time.perf_counter() - start)
        except Exception as exc:  # one failing variant must not hide the others' rows
            first_line = (str(exc).splitlines() or [""])[0][:120]
            print(f"| {name} | failed: {type(exc).__name__}: {first_line} |", flush=True)


if __name__ == "__main__":
    main()
