"""Which GPU kernels one energy+forces call launches, with their summed device time (eager vs fused step).

Tells a launch-gap-bound replay (kernel time << replay time) from an execution-bound one, and names the
kernels worth fusing.  The inputs are molecules of about `--atoms` atoms (or water boxes with --water),
`--batch` of them per call, in the neighbour layout.  Usage (needs a CUDA GPU): python3 lab/profile_kernels.py
[--model tiny] [--atoms 25] [--batch 1,256] [--top 25]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from deploycc.checkpoint import load_checkpoint
from deploycc.targets.cuda_graph import eager_step
from deploycc.targets.cuda_graph_fused import fused_step


def sample_inputs(atoms: int, batch: int, cutoff: float, device: str = "cuda") -> tuple[torch.Tensor, ...]:
    """Graph inputs of `batch` water clusters of about `atoms` atoms, on `device`."""
    from deploycc.bench.systems import water_box
    from deploycc.runtime.neighbours import Structure, neighbour_batch
    from deploycc.targets.base import GraphInputs

    cluster = water_box(atoms)
    cluster.pbc = False
    batch_ = neighbour_batch([Structure.from_atoms(cluster)] * batch, cutoff)
    return GraphInputs.from_batch(batch_).to(device).tensors()


def gpu_events(step, inputs: tuple[torch.Tensor, ...]) -> list[tuple[str, float]]:
    """(name, device µs) of every GPU kernel, copy and memset of one call, after three warm-up calls."""
    for _ in range(3):
        step(*inputs)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA], acc_events=True) as prof:
        step(*inputs)
        torch.cuda.synchronize()
    return [(e.name, e.device_time_total) for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def kernel_table(step, inputs: tuple[torch.Tensor, ...], top: int) -> str:
    """Markdown table of kernels by summed device time over one call (after warm-up)."""
    count: dict[str, int] = defaultdict(int)
    micros: dict[str, float] = defaultdict(float)
    for full_name, us in gpu_events(step, inputs):
        name = full_name[:90]
        count[name] += 1
        micros[name] += us
    total_n, total_us = sum(count.values()), sum(micros.values())
    lines = [f"{total_n} kernels, {total_us:.1f} us of kernel time ({total_us / max(total_n, 1):.2f} us each)",
             "| kernel | calls | us total |", "|---|---:|---:|"]
    for name in sorted(micros, key=micros.get, reverse=True)[:top]:
        lines.append(f"| `{name}` | {count[name]} | {micros[name]:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--atoms", type=int, default=25)
    parser.add_argument("--batch", type=str, default="1,256")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    model = load_checkpoint(args.model).model
    steps = {"eager": eager_step(model, "cuda"), "fused": fused_step(model, "cuda")}
    for batch in (int(b) for b in args.batch.split(",")):
        inputs = sample_inputs(args.atoms, batch, model.cutoff)
        for name, step in steps.items():
            print(f"\n## {name}, {args.model}, batch {batch}, ~{args.atoms} atoms each\n")
            print(kernel_table(step, inputs, args.top), flush=True)


if __name__ == "__main__":
    main()
