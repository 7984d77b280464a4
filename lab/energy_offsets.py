"""Where a student's energy error lives: a constant offset per molecule, a spread within a molecule's frames,
or a per-element bias that shifted element references would remove.

    python lab/energy_offsets.py CHECKPOINT held-out.h5 [--fit val] [--splits test test_md]

For each split: the energy MAE per atom; the MAE left after taking out each molecule's mean error (the
within-molecule spread: what differences along a trajectory see); and the MAE after per-element shifts fitted by
least squares on the --fit split (other molecules) — if that barely moves, the offsets are per molecule, not per
element, and no refit of the references removes them.
"""

from __future__ import annotations

import argparse

import numpy as np


def errors_of(predictor, data, split: str, elements: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energy errors [S] (eV), element counts [S, E] and molecule ids [S] of a split."""
    from ase import Atoms

    idx = data.splits[split]
    atoms = [Atoms(numbers=data.numbers[i], positions=data.positions[i], cell=data.cells[i], pbc=data.pbc[i])
             for i in idx]
    energies, _forces = predictor.predict(atoms)
    counts = np.array([[np.sum(data.numbers[i] == z) for z in elements] for i in idx], dtype=np.float64)
    return energies - data.energies[idx], counts, data.group[idx]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data")
    parser.add_argument("--fit", default="val")
    parser.add_argument("--splits", nargs="+", default=["test", "test_md"])
    args = parser.parse_args()

    from deploycc.api import load
    from deploycc.data.schema import read_h5

    predictor, data = load(args.checkpoint), read_h5(args.data)
    elements = sorted({int(z) for zs in data.numbers for z in zs})
    fit_err, fit_counts, _ = errors_of(predictor, data, args.fit, elements)
    shifts, *_ = np.linalg.lstsq(fit_counts, fit_err, rcond=None)
    print(f"{'split':8s} {'frames':>6s} {'E MAE':>8s} {'within molecule':>16s} {'after element shifts':>21s}  (meV/atom)")
    for split in args.splits:
        err, counts, group = errors_of(predictor, data, split, elements)
        atoms = counts.sum(1)
        per_atom = err / atoms
        means = {g: per_atom[group == g].mean() for g in np.unique(group)}
        within = per_atom - np.array([means[g] for g in group])
        shifted = (err - counts @ shifts) / atoms
        print(f"{split:8s} {len(err):6d} {1000 * np.abs(per_atom).mean():8.2f} {1000 * np.abs(within).mean():16.2f} "
              f"{1000 * np.abs(shifted).mean():21.2f}")


if __name__ == "__main__":
    main()
