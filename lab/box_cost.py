"""Teacher seconds per frame of the periodic boxes `distil --box-every` trains on (training clusters of 8 or more
molecules packed at 1 g/cm³), against a rattled molecule: what a box in the online stream costs.

    OMP_NUM_THREADS=1 python lab/box_cost.py --teacher xtb
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from deploycc.data.clusters import read_clusters
from deploycc.data.teachers import get_teacher
from deploycc.train.frames import box_pool, conformers_of, rattled


def seconds_per_frame(teacher, frames: list) -> float:
    started = time.perf_counter()
    teacher.label([atoms for _, atoms in frames])
    return (time.perf_counter() - started) / len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="xtb")
    parser.add_argument("--frames", type=int, default=2, help="rattled frames per box")
    args = parser.parse_args()
    teacher = get_teacher(args.teacher)
    chosen = ["water8", "water16", "water24", "ethanol+8water", "phenol+16water"]
    clusters = [(k, smi, name) for k, (smi, name) in enumerate(read_clusters()) if name in chosen]
    names = {k: name for k, _, name in clusters}
    rng = np.random.default_rng(0)
    print(f"teacher {args.teacher}: seconds per frame (one core)")
    molecule = rattled(conformers_of([(0, "CC(=O)Oc1ccccc1C(=O)O")], 1, 0), 4, rng)
    print(f"  aspirin (21 atoms, a molecule):        {seconds_per_frame(teacher, molecule):6.3f}")
    for mol_id, box in box_pool([(k, smi) for k, smi, _ in clusters], 1, seed=0):
        frames = rattled([(mol_id, box)], args.frames, rng)
        edge = box.cell.lengths()[0]
        print(f"  {names[mol_id]:16s} box ({len(box):3d} atoms, {edge:5.2f} Å): "
              f"{seconds_per_frame(teacher, frames):6.3f}")


if __name__ == "__main__":
    main()
