"""`deploycc predict`: energies, forces (and stress, from periodic artifacts) for every structure of a file,
written back as extended XYZ in input order: the high-throughput screening run.

Structures are read with ASE (any format it reads) or from a deploycc HDF5 file, evaluated in chunks
(similar sizes share a padded batch, see `Predictor.evaluate`), and written to a temporary file that is
renamed over `out` at the end, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .api import Predictor
from .errors import UserInputError

CHUNK = 512  # structures per evaluate call (progress granularity; batching inside is by the profile)


@dataclass
class PredictReport:
    """What one run did; `seconds` counts model evaluation only (not reading or writing)."""

    structures: int
    atoms: int
    seconds: float
    out: Path
    stress: bool

    @property
    def structures_per_second(self) -> float:
        return self.structures / self.seconds if self.seconds > 0 else float("inf")


def read_atoms(path: Path) -> list:
    """Every structure of `path` as ase.Atoms (deploycc HDF5 or any ASE-readable file); one-line errors."""
    from ase import Atoms

    from .data.schema import read_h5

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"structure file {path} does not exist")
    if path.suffix in (".h5", ".hdf5"):
        data = read_h5(path)
        cells = data.cells if data.cells is not None else np.zeros((len(data), 3, 3))
        pbc = data.pbc if data.pbc is not None else np.zeros((len(data), 3), dtype=bool)
        return [Atoms(numbers=z, positions=r, cell=c, pbc=p)
                for z, r, c, p in zip(data.numbers, data.positions, cells, pbc)]
    import ase.io

    try:
        atoms_list = ase.io.read(str(path), index=":")
    except Exception as exc:  # ASE raises many types for unreadable files
        raise UserInputError(f"cannot read {path} with ASE ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not atoms_list:
        raise UserInputError(f"{path} holds no structures")
    return list(atoms_list)


def labelled(atoms, energy: float, forces: np.ndarray, stress: np.ndarray | None):
    """A copy of `atoms` carrying the predictions as a single-point calculator (extxyz writes them)."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.stress import full_3x3_to_voigt_6_stress

    out = atoms.copy()
    results = {"energy": energy, "free_energy": energy, "forces": forces}
    if stress is not None and np.isfinite(stress).all():
        results["stress"] = full_3x3_to_voigt_6_stress(stress)
    out.calc = SinglePointCalculator(out, **results)
    return out


def predict_file(predictor: Predictor, structures: Path, out: Path,
                 on_progress: Callable[[int, int], None] | None = None) -> PredictReport:
    """Evaluate every structure of `structures` with `predictor` and write them, labelled, to `out` (extxyz)."""
    import ase.io

    atoms_list = read_atoms(structures)
    predictor.validate(atoms_list)  # every bad structure is refused, by its index in the file, before any work
    results, seconds, with_stress = [], 0.0, False
    for start in range(0, len(atoms_list), CHUNK):
        chunk = atoms_list[start : start + CHUNK]
        begin = time.perf_counter()
        energies, forces, stresses = predictor.evaluate(chunk)
        seconds += time.perf_counter() - begin
        for k, atoms in enumerate(chunk):
            stress = None if stresses is None else stresses[k]
            with_stress |= stress is not None and bool(np.isfinite(stress).all())
            results.append(labelled(atoms, float(energies[k]), forces[k], stress))
        if on_progress is not None:
            on_progress(min(start + CHUNK, len(atoms_list)), len(atoms_list))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        ase.io.write(str(temporary), results, format="extxyz")
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return PredictReport(len(atoms_list), sum(len(a) for a in atoms_list), seconds, out, with_stress)
