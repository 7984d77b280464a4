"""Python API: `load()` any artifact, checkpoint or preset into a Predictor for ASE structures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .batching import pad
from .errors import UserInputError
from .targets.base import Runner


class Predictor:
    """Energies and forces of lists of structures; pads, batches and splits at the profile maximum."""

    def __init__(self, runner: Runner, max_batch: int, max_atoms: int, max_z: int, label: str) -> None:
        self.runner = runner
        self.max_batch = max_batch
        self.max_atoms = max_atoms
        self.max_z = max_z
        self.label = label

    def _check(self, atoms_list: Sequence) -> None:
        for k, atoms in enumerate(atoms_list):
            z = atoms.get_atomic_numbers()
            where = f"structure {k} ({atoms.get_chemical_formula()})" if len(z) else f"structure {k}"
            if len(z) == 0:
                raise UserInputError(f"{where} has no atoms")
            if len(z) > self.max_atoms:
                raise UserInputError(f"{where} has {len(z)} atoms; {self.label} takes at most {self.max_atoms}")
            if z.min() < 1 or z.max() > self.max_z:
                raise UserInputError(f"{where} has atomic number {int(z.max() if z.max() > self.max_z else z.min())}"
                                     f" outside 1..{self.max_z}")
            if not np.all(np.isfinite(atoms.get_positions())):
                raise UserInputError(f"{where} has NaN or infinite positions")
            if np.any(atoms.get_pbc()):
                raise UserInputError(f"{where} is periodic; this model handles isolated molecules only (pbc=False)")

    def predict(self, atoms_list: Sequence) -> tuple[np.ndarray, list[np.ndarray]]:
        """Energies [B] in eV and per-structure forces [n_k, 3] in eV/Angstrom."""
        atoms_list = list(atoms_list)
        self._check(atoms_list)
        energies = np.zeros(len(atoms_list))
        forces: list[np.ndarray] = [np.zeros((0, 3))] * len(atoms_list)
        order = np.argsort([len(a) for a in atoms_list], kind="stable")  # similar sizes share a batch
        for start in range(0, len(order), self.max_batch):
            idx = order[start : start + self.max_batch]
            z, r = pad([atoms_list[k].get_atomic_numbers() for k in idx],
                       [atoms_list[k].get_positions() for k in idx])
            energy, force = self.runner.predict(z, r)
            energy = energy.detach().double().cpu().numpy()
            force = force.detach().double().cpu().numpy()
            for row, k in enumerate(idx):
                energies[k] = energy[row]
                forces[k] = force[row, : len(atoms_list[k])]
        return energies, forces


def load(source: str | os.PathLike, device: str | None = None) -> Predictor:
    """A predictor for an artifact folder or file, a checkpoint path, or a preset name."""
    from .checkpoint import load_checkpoint
    from .pipeline import open_artifact, resolve_settings
    from .targets.eager import EagerRunner

    path = Path(source)
    folder = path.parent if path.is_file() and (path.parent / "manifest.json").is_file() else path
    if folder.is_dir():
        runner, manifest, settings = open_artifact(folder, device)
        return Predictor(runner, settings.batch.max, settings.atoms.max, manifest["model_config"]["max_z"],
                         f"{manifest['model']}/{manifest['target']}")
    checkpoint = load_checkpoint(source)
    settings = resolve_settings("eager", device)
    runner = EagerRunner(checkpoint.model, settings.device)
    return Predictor(runner, settings.batch.max, 10**6, checkpoint.config.max_z, f"{checkpoint.name}/eager")


