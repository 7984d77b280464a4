"""An ASE calculator over any deploycc artifact, checkpoint or preset: energy, free_energy, forces, and stress
for structures with periodic axes.

The calculator keeps a Verlet neighbour list (`skin`, Å): built with cutoff + skin, it is rebuilt only when
an atom has moved more than skin / 2 or the numbers, cell or pbc changed (deploycc/runtime/neighbours.py);
slots beyond the cutoff add nothing.  skin=0 (the default) rebuilds at every call, which is cheaper for
small molecules, whose list costs less than the wider slots a skin brings.  The structure rules
(deploycc/runtime/validate.py) are applied at every call, the minimum distance at the current positions.

An ASE calculator holds the results of its last call, so it cannot be shared between threads: the first
thread that uses it owns it, and a call from another thread is refused (give each thread its own
calculator; they may share one Predictor, which is thread-safe).
"""

from __future__ import annotations

import os
import threading

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ..errors import UserInputError
from .load import load
from .neighbours import NeighbourCache
from .predictor import Predictor
from .validate import as_structure, check_neighbours, check_structure


class DeployccCalculator(Calculator):
    """`atoms.calc = DeployccCalculator("artifacts/tiny/onnx")` runs ASE optimisers and MD unchanged."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    _claim = threading.Lock()  # makes "first caller owns it" atomic between threads

    def __init__(self, source: str | os.PathLike | Predictor = "tiny", device: str | None = None,
                 unseen_elements: str = "warn", skin: float = 0.0, **kwargs) -> None:
        """`unseen_elements`: "warn" (default), "refuse" or "allow" elements absent from the training data."""
        super().__init__(**kwargs)
        self.predictor = source if isinstance(source, Predictor) else load(source, device, unseen_elements)
        self.neighbours = NeighbourCache(self.predictor.cutoff, skin)
        self._owner: int | None = None

    def check_state(self, atoms, tol: float = 1e-15) -> list[str]:
        """What changed since the last calculation among what the model depends on (atomic numbers,
        positions, cell, pbc), compared exactly.  ASE's default also compares charges and magnetic moments
        with `numpy.allclose`, which costs more per MD step than the model itself on a GPU."""
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

    def get_property(self, name, atoms=None, allow_calculation=True):
        """ASE's entry point: refuse a second thread here, before ASE resets the owner's results."""
        self._check_thread()
        return super().get_property(name, atoms, allow_calculation)

    def reset(self) -> None:
        if getattr(self, "_owner", None) is not None:
            self._check_thread()
        super().reset()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        self._check_thread()
        super().calculate(atoms, properties, system_changes)
        structure = as_structure(self.atoms, "the structure")
        rules = self.predictor.rules
        check_structure(structure, "the structure", rules)
        rebuilds = self.neighbours.builds
        batch = self.neighbours.get(structure)
        try:
            # Distances at the current positions, also between rebuilds (atoms may close in by up to the skin).
            check_neighbours(structure, self.neighbours.half, "the structure", rules,
                             self.neighbours.cutoff + self.neighbours.skin)
            if self.neighbours.builds != rebuilds:
                self.predictor.check_fits(structure, batch.slots, "the structure")  # atoms profile, memory budget
        except UserInputError:
            self.neighbours.reference = None  # a refused list is never reused: the next call checks again
            raise
        result = self.predictor.run(batch)
        stress = None
        if structure.periodic:
            from ..model.forces import stress_from_virial

            stress = stress_from_virial(result.virials[0], structure.cell)
        self.results = calculator_results(float(result.energies[0]), result.forces_of(0), stress)

    def _check_thread(self) -> None:
        current = threading.get_ident()
        if self._owner is None:
            with self._claim:
                if self._owner is None:
                    self._owner = current
        if self._owner != current:
            raise UserInputError("a DeployccCalculator is used by a second thread; give each thread its own "
                                 "calculator (they may share one Predictor)")


def calculator_results(energy: float, forces: np.ndarray, stress: np.ndarray | None) -> dict:
    """ASE results of one structure; stress (Voigt) only when finite (a structure without periodic axes has
    none, and ASE then raises PropertyNotImplementedError for it)."""
    results = {"energy": energy, "free_energy": energy, "forces": forces}
    if stress is not None and np.isfinite(stress).all():
        results["stress"] = full_3x3_to_voigt_6_stress(stress)
    return results
