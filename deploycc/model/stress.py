"""Virial of periodic models, W = -dE/d(strain), by autograd in the same backward pass as the forces; the host
turns it into stress, sigma = -W / V (`stress_from_virial`).

A homogeneous strain eps (a zero [B, 3, 3] tensor that requires grad) deforms positions and cell together,
r' = r (I + eps) and cell' = cell (I + eps), so fractional coordinates, the minimum-image wrap and the lattice
shifts all follow it.  W = -dE/d(eps) at eps = 0 (eV; sum_ij r_ij (x) f_ij for a pair potential).  Both
gradients come from one `autograd.grad` over (positions, strain): a few 3x3 products beyond the forces.

The graphs return the virial, not the stress, because the volume is the user's: the cell a graph sees has
its open axes replaced by unit vectors (`periodic.check_cell`), while ASE divides a slab's virial by the
volume of the cell as given, vacuum included.  sigma = -W / V is ASE's stress (eV/A^3, negative under
compression; Voigt order xx yy zz yz xz xy).

`deform` is TorchScript-compatible: the scripted wrapper (`EnergyForcesVirial`) calls it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def deform(positions: torch.Tensor, cell: torch.Tensor, strain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions [B, N, 3] and cells [B, 3, 3] under the homogeneous strain [B, 3, 3] (rows times I + strain)."""
    identity = torch.eye(3, dtype=positions.dtype, device=positions.device).unsqueeze(0)
    gradient = identity + strain
    return torch.bmm(positions, gradient), torch.bmm(cell, gradient)


def energy_forces_virial(
    model: nn.Module, numbers: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
    shifts: torch.Tensor, create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Energies [B], forces -dE/dR [B, N, 3] and virials -dE/d(strain) [B, 3, 3] of a periodic model."""
    with torch.enable_grad():
        pos = positions.clone().requires_grad_(True)
        strain = torch.zeros(positions.shape[0], 3, 3, dtype=positions.dtype, device=positions.device,
                             requires_grad=True)
        strained_positions, strained_cell = deform(pos, cell, strain)
        energy = model(numbers, strained_positions, strained_cell, pbc, shifts)
        grad, strain_grad = torch.autograd.grad(energy.sum(), [pos, strain], create_graph=create_graph)
    if create_graph:
        return energy, -grad, -strain_grad
    return energy.detach(), -grad.detach(), -strain_grad.detach()


def stress_from_virial(virial: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """ASE's stress -W / V [3, 3] (eV/A^3) of one structure, V the volume of its cell as given; NaN when the
    cell has no volume."""
    volume = abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64).reshape(3, 3))))
    if volume < 1e-9:
        return np.full((3, 3), np.nan)
    return -np.asarray(virial, dtype=np.float64) / volume


class EnergyForcesVirial(nn.Module):
    """Scriptable wrapper of a periodic model: forward returns (energy [B], forces [B, N, 3], virial [B, 3, 3])."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.periodic = True  # read by runners: takes cell, pbc, shifts
        self.cutoff = float(model.cutoff)

    def forward(self, numbers: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
                shifts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        previous = torch.is_grad_enabled()
        torch.set_grad_enabled(True)  # the call form: the context manager does not script
        pos = positions.clone().requires_grad_(True)  # clone, not detach: freezing drops detach
        strain = torch.zeros([positions.shape[0], 3, 3], dtype=positions.dtype, device=positions.device)
        strain.requires_grad_(True)
        strained_positions, strained_cell = deform(pos, cell, strain)
        energy = self.model(numbers, strained_positions, strained_cell, pbc, shifts)
        grads = torch.autograd.grad([energy.sum()], [pos, strain])
        grad, strain_grad = grads[0], grads[1]
        assert grad is not None and strain_grad is not None
        torch.set_grad_enabled(previous)
        return energy.detach(), -grad.detach(), -strain_grad.detach()
