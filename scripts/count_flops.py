"""FLOPs of one energy+forces evaluation per atom, for each preset, on molecules and on a periodic water box
(PyTorch's FLOP counter: matrix products only; element-wise work is not counted).
Usage: python scripts/count_flops.py [--atoms 25]"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from deploycc.bench.systems import water_box
from deploycc.bench.workload import load_workload
from deploycc.checkpoint import load_checkpoint
from deploycc.model.config import PRESET_CONFIGS
from deploycc.paths import default_calib_file
from deploycc.runtime.neighbours import Structure, neighbour_batch
from deploycc.targets.base import GraphInputs


def flops_per_atom(name: str, structures: list[Structure]) -> tuple[float, dict[str, float]]:
    """kFLOP per atom of energy + forces (forward and the backward to the pair vectors), total and by op."""
    model = load_checkpoint(name).model.set_recompute(True)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    batch = neighbour_batch(structures, model.cutoff)
    inputs = GraphInputs.from_batch(batch)
    vectors = inputs.vectors.requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        model(inputs.numbers, vectors, inputs.neighbours, inputs.reverse).sum().backward()
    counts = {str(op).split(".")[1]: f / batch.atoms / 1e3 for op, f in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops() / batch.atoms / 1e3, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=25)
    args = parser.parse_args()
    molecules = load_workload(args.atoms, default_calib_file()).structures[:16]
    water = [Structure.from_atoms(water_box(3000))]
    print(f"| preset | kFLOP/atom, ~{args.atoms}-atom molecules | kFLOP/atom, water box (3,000 atoms) | bmm | mm+addmm |")
    print("|---|---:|---:|---:|---:|")
    for name in PRESET_CONFIGS:
        small, _ = flops_per_atom(name, molecules)
        large, ops = flops_per_atom(name, water)
        print(f"| {name} | {small:.0f} | {large:.0f} | {ops.get('bmm', 0):.0f} | "
              f"{ops.get('mm', 0) + ops.get('addmm', 0):.0f} |")


if __name__ == "__main__":
    main()
