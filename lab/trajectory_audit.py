"""Teacher labels on frames of a student's own MD trajectory: does the student stay where it is accurate?

    python lab/trajectory_audit.py TRAJ --teacher sevennet --frames 20 --out audit.h5
    python lab/student_report.py CHECKPOINT audit.h5 --split all --out docs/students/NAME-md-audit

takes `--frames` frames evenly spaced over the trajectory (an ASE .traj or any file ASE reads, e.g. the
`traj` that `deploycc md` writes), labels them with the teacher and writes them as a labelled HDF5 (one group
per trajectory), so the student's errors on the configurations it samples itself can be scored.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trajectories", nargs="+", type=Path)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--frames", type=int, default=20, help="frames per trajectory, evenly spaced")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from ase.io import read

    from deploycc.data.schema import from_atoms, write_h5
    from deploycc.data.teachers import get_teacher

    teacher = get_teacher(args.teacher)
    frames, groups, energies, forces = [], [], [], []
    started = time.perf_counter()
    for group, path in enumerate(args.trajectories):
        images = read(path, index=":")
        if not images:
            raise SystemExit(f"{path} holds no frame")
        picks = np.unique(np.linspace(0, len(images) - 1, args.frames).round().astype(int))
        chosen = [images[k].copy() for k in picks]  # copies carry no calculator: from_atoms sees them unlabelled
        labels = teacher.label(chosen)
        frames += chosen
        groups += [group] * len(chosen)
        energies += [float(e) for e in labels[0]]
        forces += [np.asarray(f, dtype=np.float64) for f in labels[1]]
    data = from_atoms(frames, group=np.asarray(groups))
    data.energies, data.forces = np.asarray(energies), forces
    if not np.isfinite(data.energies).all() or not all(np.isfinite(f).all() for f in data.forces):
        raise SystemExit("the teacher gave non-finite labels: nothing written")
    data.attrs["teacher"] = args.teacher
    write_h5(data, args.out)
    seconds = time.perf_counter() - started
    print(f"{len(frames)} frames of {len(args.trajectories)} trajectories labelled by {args.teacher} in {seconds:.0f} s"
          f" -> {args.out}")


if __name__ == "__main__":
    main()
