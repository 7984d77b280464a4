"""What each frame sampler of `deploycc distil` gives a teacher: rattled conformers, normal-mode samples and
teacher MD, on the same held-out test molecules (no clusters), labelled by the same teacher:

    OMP_NUM_THREADS=1 python lab/sampler_frames.py --teacher ani1x --molecules 40 --frames 4

Prints, per sampler, the teacher's force components (RMS), the energy above the conformer's own teacher energy
(meV/atom, median and 90th percentile), the largest atom displacement from the conformer (Å, median), and
the teacher calls a kept frame cost.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _summary(name: str, frames, reference: dict[int, tuple[float, np.ndarray]], seconds: float) -> str:
    """A table row; frames of a molecule whose conformer the teacher failed on count for forces only."""
    known = [k for k, g in enumerate(frames.group) if int(g) in reference]
    rise = [(frames.energies[k] - reference[frames.group[k]][0]) / len(frames.numbers[k]) * 1e3 for k in known]
    moved = [np.abs(frames.positions[k] - reference[frames.group[k]][1]).max() for k in known]
    rms = float(np.sqrt(np.mean(np.concatenate(frames.forces) ** 2)))
    calls = frames.attempted / max(len(frames.energies), 1)
    return (f"| {name} | {len(frames.energies)} | {rms:.2f} | {np.median(rise):.0f} | {np.percentile(rise, 90):.0f} "
            f"| {np.median(moved):.2f} | {calls:.1f} | {seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="ani1x")
    parser.add_argument("--molecules", type=int, default=40, help="test molecules to use")
    parser.add_argument("--frames", type=int, default=4, help="frames per molecule and sampler")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from deploycc.data.clusters import is_cluster
    from deploycc.data.generate import molecules_for, read_smiles
    from deploycc.data.normal_modes import NormalModeSampler
    from deploycc.data.teachers import get_teacher
    from deploycc.train.frames import conformers_of, labelled, rattled, split_molecules, thermal_split
    from deploycc.train.online import molecule_file

    teacher = get_teacher(args.teacher)
    pairs, _ = molecules_for(read_smiles(molecule_file()), teacher)
    test = [m for m in split_molecules(pairs, args.seed)["test"] if not is_cluster(m[1])][: args.molecules]
    pool = conformers_of(test, 1, args.seed + 7919 * 3)  # the conformers thermal_split starts its walkers from
    base = labelled(teacher, [(m, a) for m, a in pool], 5.0)
    reference = {int(g): (float(e), r) for g, e, r in zip(base.group, base.energies, base.positions)}
    rng = np.random.default_rng(args.seed)
    rows = []
    started = time.perf_counter()
    frames = labelled(teacher, [f for item in pool for f in rattled([item], args.frames, rng)], 5.0)
    rows.append(_summary("rattled (0.01-0.12 Å)", frames, reference, time.perf_counter() - started))
    started = time.perf_counter()
    made = [f for k in range(len(pool)) for f in NormalModeSampler([pool[k]], dict(test)).frames(args.frames, rng)]
    frames = labelled(teacher, made, 5.0)
    rows.append(_summary("normal modes (300-1000 K)", frames, reference, time.perf_counter() - started))
    started = time.perf_counter()
    frames = thermal_split(teacher, test, args.frames, args.seed, 3, 5.0)
    rows.append(_summary("teacher MD (300-1000 K)", frames, reference, time.perf_counter() - started))
    print(f"{len(pool)} test molecules, teacher {args.teacher}")
    print("| sampler | frames | force RMS (eV/Å) | E rise median (meV/atom) | E rise p90 | max displacement median (Å) "
          "| teacher calls / frame | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
