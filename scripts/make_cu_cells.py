"""Write the periodic scaling workload: rattled fcc Cu supercells of 32, 64, 108, 128 and 256 atoms (EMT-free,
unlabelled), for `deploycc bench --model metals-tiny --structures calib/cu-cells.extxyz --atoms N`."""

from __future__ import annotations

import sys

import ase.io
import numpy as np
from ase.build import bulk

REPEATS = {32: (2, 2, 2), 64: (2, 2, 4), 108: (3, 3, 3), 128: (2, 4, 4), 256: (4, 4, 4)}


def main(path: str = "calib/cu-cells.extxyz", copies: int = 4) -> None:
    rng = np.random.default_rng(0)
    frames = []
    for reps in REPEATS.values():
        for _ in range(copies):
            atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(reps)
            atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
            frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")


if __name__ == "__main__":
    main(*sys.argv[1:])
