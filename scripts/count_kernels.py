"""GPU kernels launched by one energy+forces call of a preset, eager step vs Inductor-fused step.

A CUDA-graph replay costs roughly (kernels x per-kernel launch gap), so this count is what bounds the
batch-1 latency of `cuda-graph` and `cuda-graph-fused`.  Usage (needs a CUDA GPU):
    python3 scripts/count_kernels.py [--model tiny] [--atoms 32] [--batch 1]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from deploycc.checkpoint import load_checkpoint
from deploycc.targets.cuda_graph import eager_step
from deploycc.targets.cuda_graph_fused import fused_step


def kernels_per_call(step, numbers: torch.Tensor, positions: torch.Tensor) -> int:
    """CUDA kernels (not memcpy/memset) recorded by the profiler during one call."""
    for _ in range(3):
        step(numbers, positions)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step(numbers, positions)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(1 for n in names if not n.lower().startswith(("memcpy", "memset")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--atoms", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    model = load_checkpoint(args.model).model
    numbers = torch.randint(1, 9, (args.batch, args.atoms), device="cuda")
    positions = torch.randn(args.batch, args.atoms, 3, device="cuda") * 1.6
    print(f"| step | kernels per call ({args.model}, batch {args.batch}, {args.atoms} atoms) | first call s |")
    print("|---|---:|---:|")
    for name, make in (("eager (cuda-graph)", eager_step), ("inductor (cuda-graph-fused)", fused_step)):
        start = time.perf_counter()
        step = make(model, "cuda")
        step(numbers, positions)
        torch.cuda.synchronize()
        first = time.perf_counter() - start
        print(f"| {name} | {kernels_per_call(step, numbers, positions)} | {first:.1f} |")


if __name__ == "__main__":
    main()
