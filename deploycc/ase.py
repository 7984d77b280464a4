"""An ASE calculator over any deploycc artifact, checkpoint or preset (energy, free_energy, forces)."""

from __future__ import annotations

import os

from ase.calculators.calculator import Calculator, all_changes

from .api import Predictor, load


class DeployccCalculator(Calculator):
    """`atoms.calc = DeployccCalculator("artifacts/tiny/onnx")` runs ASE optimisers and MD unchanged."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, source: str | os.PathLike | Predictor = "tiny", device: str | None = None,
                 unseen_elements: str = "warn", **kwargs) -> None:
        """`unseen_elements`: "warn" (default), "refuse" or "allow" elements absent from the training data."""
        super().__init__(**kwargs)
        self.predictor = source if isinstance(source, Predictor) else load(source, device, unseen_elements)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        energies, forces = self.predictor.predict([self.atoms])
        self.results = {"energy": float(energies[0]), "free_energy": float(energies[0]), "forces": forces[0]}
