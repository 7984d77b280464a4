"""An ASE calculator over any deploycc artifact, checkpoint or preset (energy, free_energy, forces; stress
from periodic artifacts for structures with periodic axes)."""

from __future__ import annotations

import os

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .api import Predictor, load


class DeployccCalculator(Calculator):
    """`atoms.calc = DeployccCalculator("artifacts/tiny/onnx")` runs ASE optimisers and MD unchanged."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, source: str | os.PathLike | Predictor = "tiny", device: str | None = None,
                 unseen_elements: str = "warn", **kwargs) -> None:
        """`unseen_elements`: "warn" (default), "refuse" or "allow" elements absent from the training data."""
        super().__init__(**kwargs)
        self.predictor = source if isinstance(source, Predictor) else load(source, device, unseen_elements)

    def check_state(self, atoms, tol: float = 1e-15) -> list[str]:
        """What changed since the last calculation, among what the model depends on (atomic numbers,
        positions, cell, pbc), compared exactly (stricter than ASE's tolerance of 1e-15).  ASE's default
        also compares charges and magnetic moments with `numpy.allclose`, which costs more per MD step
        than the model itself on a GPU; `tol` and `ignored_changes` have nothing left to relax."""
        old = self.atoms
        if old is None:
            return list(all_changes)
        changes = []
        if not np.array_equal(old.positions, atoms.positions):
            changes.append("positions")
        if not np.array_equal(old.numbers, atoms.numbers):
            changes.append("numbers")
        if not np.array_equal(old.cell.array, atoms.cell.array):
            changes.append("cell")
        if not np.array_equal(old.pbc, atoms.pbc):
            changes.append("pbc")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        stress = None
        if "stress" in properties:
            energies, forces, stresses = self.predictor.evaluate([self.atoms])
            stress = None if stresses is None else stresses[0]
        else:
            energies, forces = self.predictor.predict([self.atoms])
        self.results = calculator_results(float(energies[0]), forces[0], stress)


def calculator_results(energy: float, forces: np.ndarray, stress: np.ndarray | None) -> dict:
    """ASE results of one structure; stress (Voigt) only when finite (a structure without periodic axes has
    none, and ASE then raises PropertyNotImplementedError for it)."""
    results = {"energy": energy, "free_energy": energy, "forces": forces}
    if stress is not None and np.isfinite(stress).all():
        results["stress"] = full_3x3_to_voigt_6_stress(stress)
    return results
