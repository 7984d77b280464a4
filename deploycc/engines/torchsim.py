"""A torch-sim model over any deploycc artifact, checkpoint or preset: `DeployccModel("artifacts/tiny/onnx")`.

torch-sim (torch-sim-atomistic >= 0.3) batches many systems into one flat SimState: positions [n, 3],
atomic_numbers [n], system_idx [n], cell [S, 3, 3] with the cell vectors as columns (ASE: rows), and one
pbc flag for all systems.  `forward` turns it into one ase.Atoms per system and calls the Predictor once
for the whole list; the Predictor validates, batches and memory-budgets it (deploycc/runtime/predictor.py).

Units are torch-sim's metal units, which are ASE's: energy [S] in eV, forces [n, 3] in eV/Å, stress
[S, 3, 3] in eV/Å^3 with ASE's sign ((1/V) dE/dstrain, positive under tension), the sign torch-sim's NPT
integrators and cell filters expect.  Stress needs a periodic cell: with `compute_stress` (the default) a
system without periodic axes gets a NaN stress, the placeholder torch-sim itself uses for uncomputed stress.
The outputs carry no autograd graph (the forces come from the artifact, not from torch-sim).

Bad structures and unusable artifacts raise deploycc.errors.DeployccError subclasses (one-line errors).
This module imports torch_sim at the top: nothing else in deploycc imports it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from ase import Atoms
from torch_sim.models.interface import ModelInterface

from ..runtime.load import load
from ..runtime.predictor import Predictor


class DeployccModel(ModelInterface):
    """A torch-sim ModelInterface whose energies, forces and stresses come from a deploycc Predictor."""

    def __init__(self, source: str | os.PathLike | Predictor = "tiny", device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float64, compute_stress: bool = True,
                 unseen_elements: str = "warn") -> None:
        """`source`: anything `deploycc.api.load` takes, or a Predictor.  `device`: where the artifact runs
        and the tensors torch-sim creates for this model live (default: the artifact's device).
        `unseen_elements`: "warn", "refuse" or "allow" elements absent from the training data."""
        super().__init__()
        if isinstance(source, Predictor):
            self.predictor = source
        else:
            self.predictor = load(source, None if device is None else str(device), unseen_elements)
        self._device = torch.device(device if device is not None else self.predictor.settings.device)
        self._dtype = dtype
        self._compute_stress = bool(compute_stress)
        self._compute_forces = True
        self._memory_scales_with = "n_atoms_x_density"  # a radial cutoff

    def forward(self, state: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Energy [S], forces [n, 3] and (with compute_stress) stress [S, 3, 3] of a SimState or state dict,
        on the state's device and dtype."""
        positions = _field(state, "positions")
        atoms_list, order = state_to_atoms(state)
        energies, forces, stresses = self.predictor.evaluate(atoms_list)
        flat = np.zeros((len(order), 3))
        flat[order] = np.concatenate(forces) if forces else np.zeros((0, 3))
        like = {"dtype": positions.dtype, "device": positions.device}
        out = {"energy": torch.as_tensor(energies, **like), "forces": torch.as_tensor(flat, **like)}
        if self.compute_stress:
            out["stress"] = torch.as_tensor(stresses, **like)
        return out


def state_to_atoms(state: Any) -> tuple[list[Atoms], np.ndarray]:
    """One ase.Atoms per system of a SimState (or a dict with its fields), and the flat index of every atom
    in the order the systems' atoms follow one another (so per-system forces scatter back with it)."""
    positions = _numpy(_field(state, "positions"), np.float64).reshape(-1, 3)
    numbers = _numpy(_field(state, "atomic_numbers"), np.int64).reshape(-1)
    cell = _numpy(_field(state, "cell"), np.float64).reshape(-1, 3, 3)
    system_idx = _field(state, "system_idx")
    if system_idx is None:
        system_idx = _field(state, "batch")  # torch-sim before 0.3
    system_idx = np.zeros(len(numbers), np.int64) if system_idx is None else _numpy(system_idx, np.int64)
    pbc = system_pbc(_field(state, "pbc"), len(cell))
    order = np.argsort(system_idx, kind="stable")
    counts = np.bincount(system_idx, minlength=len(cell))
    atoms_list = []
    for k, atoms in enumerate(np.split(order, np.cumsum(counts)[:-1])):
        atoms_list.append(Atoms(numbers=numbers[atoms], positions=positions[atoms], cell=cell[k].T, pbc=pbc[k]))
    return atoms_list, order


def system_pbc(pbc: Any, systems: int) -> np.ndarray:
    """Periodic axes [S, 3] from torch-sim's pbc: one bool (0.3), three, or three per system."""
    value = _numpy(pbc, bool) if torch.is_tensor(pbc) else np.asarray(False if pbc is None else pbc, bool)
    return np.broadcast_to(value if value.ndim == 2 else np.broadcast_to(value, 3), (systems, 3))


def _field(state: Any, name: str) -> Any:
    return state.get(name) if isinstance(state, dict) else getattr(state, name, None)


def _numpy(value: Any, dtype: type) -> np.ndarray:
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)
