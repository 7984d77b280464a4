"""Which GPU kernels one energy+forces call launches, with their summed device time (eager vs fused step).

Tells a launch-gap-bound replay (kernel time << replay time) from an execution-bound one, and names the
kernels worth fusing.  Usage (needs a CUDA GPU): python3 scripts/profile_kernels.py [--model tiny]
[--atoms 25] [--batch 1] [--top 25]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from deploycc.checkpoint import load_checkpoint
from deploycc.targets.cuda_graph import eager_step
from deploycc.targets.cuda_graph_fused import fused_step


def gpu_events(step, numbers: torch.Tensor, positions: torch.Tensor) -> list[tuple[str, float]]:
    """(name, device µs) of every GPU kernel, copy and memset of one call, after three warm-up calls."""
    for _ in range(3):
        step(numbers, positions)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA], acc_events=True) as prof:
        step(numbers, positions)
        torch.cuda.synchronize()
    return [(e.name, e.device_time_total) for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def kernel_table(step, numbers: torch.Tensor, positions: torch.Tensor, top: int) -> str:
    """Markdown table of kernels by summed device time over one call (after warm-up)."""
    count: dict[str, int] = defaultdict(int)
    micros: dict[str, float] = defaultdict(float)
    for full_name, us in gpu_events(step, numbers, positions):
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
        numbers = torch.randint(1, 9, (batch, args.atoms), device="cuda")
        positions = torch.randn(batch, args.atoms, 3, device="cuda") * 1.6
        for name, step in steps.items():
            print(f"\n## {name}, {args.model}, batch {batch}, {args.atoms} atoms\n")
            print(kernel_table(step, numbers, positions, args.top), flush=True)


if __name__ == "__main__":
    main()
