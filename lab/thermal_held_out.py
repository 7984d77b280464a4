"""The held-out molecules of an online run in teacher MD (300-1000 K), as a labelled HDF5 (split test_md),
to score any student on thermal frames next to the rattled ones:

    OMP_NUM_THREADS=1 python lab/thermal_held_out.py --teacher ani1x --frames 8 --out work/ani1x-md.h5
    python lab/student_report.py deploycc/presets/tiny-ani1x.pt work/ani1x-md.h5 --split test_md --out NAME

The molecules are the test molecules of `deploycc distil` for the same teacher, molecule list and seed; the
frames are the ones `distil` scores as "test (teacher MD)" (stream 3), with more frames per molecule here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="ani1x")
    parser.add_argument("--frames", type=int, default=8, help="frames per test molecule, 10 fs apart")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from deploycc.data.generate import molecules_for, read_smiles
    from deploycc.data.schema import Structures, write_h5
    from deploycc.data.teachers import get_teacher
    from deploycc.train.frames import split_molecules, thermal_split
    from deploycc.train.online import molecule_file

    teacher = get_teacher(args.teacher)
    pairs, _ = molecules_for(read_smiles(molecule_file()), teacher)
    test = split_molecules(pairs, args.seed)["test"]
    started = time.perf_counter()
    frames = thermal_split(teacher, test, args.frames, args.seed, 3, args.cutoff)
    seconds = time.perf_counter() - started
    n = len(frames.numbers)
    data = Structures(numbers=frames.numbers, positions=frames.positions, energies=frames.energies,
                      forces=frames.forces, cells=np.zeros((n, 3, 3)), pbc=np.zeros((n, 3), bool), group=frames.group,
                      splits={"test_md": np.arange(n)},
                      attrs={"teacher": args.teacher, "source": "teacher MD of the online test molecules"})
    write_h5(data, args.out)
    rms = float(np.sqrt(np.mean(np.concatenate(frames.forces) ** 2)))
    print(f"{n} frames of {len(set(frames.group.tolist()))} test molecules in {seconds:.0f} s "
          f"({frames.attempted} teacher evaluations); force components RMS {rms:.2f} eV/Å -> {args.out}")


if __name__ == "__main__":
    main()
