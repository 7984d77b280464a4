"""FLOPs of one energy+forces evaluation per molecule, for each preset (PyTorch's FLOP counter: matrix
products only; element-wise work is not counted).  Usage: python scripts/count_flops.py [--atoms 25]"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from deploycc.checkpoint import load_checkpoint
from deploycc.model.config import PRESET_CONFIGS


def flops_per_structure(name: str, atoms: int, batch: int = 8) -> dict[str, float]:
    """MFLOP per structure of energy + forces (forward and the backward to positions), by ATen op."""
    model = load_checkpoint(name).model
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    numbers = torch.randint(1, 9, (batch, atoms))
    positions = (torch.randn(batch, atoms, 3) * 1.6).requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        model(numbers, positions).sum().backward()  # autograd.grad is not supported under the counter
    counts = {str(op).split(".")[1]: flops / batch / 1e6 for op, flops in counter.get_flop_counts()["Global"].items()}
    return {"total": counter.get_total_flops() / batch / 1e6, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=25)
    args = parser.parse_args()
    print(f"| preset | MFLOP per structure ({args.atoms} atoms, energy + forces) | mm | addmm | bmm |")
    print("|---|---:|---:|---:|---:|")
    for name, config in PRESET_CONFIGS.items():
        if config.periodic:
            continue
        c = flops_per_structure(name, args.atoms)
        print(f"| {name} | {c['total']:.1f} | {c.get('mm', 0):.1f} | {c.get('addmm', 0):.1f} | {c.get('bmm', 0):.1f} |")


if __name__ == "__main__":
    main()
