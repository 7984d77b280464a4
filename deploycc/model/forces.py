"""Forces and virials as exact gradients of the energy with respect to the pair vectors.

The energy depends on positions only through the slot vectors d_im = r_j + shift - r_i, so with
g_im = dE/dd_im (one backward pass):

    forces   F_k = -dE/dr_k = sum_m g_km - sum_m g[reverse[k, m]]     (a gather, no scatter)
    virials  w_k = -sum_m d_km (x) g_km     [A, 3, 3], summing to W = -dE/d(strain) of each structure

A homogeneous strain eps maps every pair vector, image shifts included, to d (I + eps), so the summed
virial is exact for periodic cells, slabs and molecules alike; the host divides by the cell volume for the
stress, sigma = -W / V (`stress_from_virial`, ASE's sign and units).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .pairs import reverse_sum


def forces_and_virials(grad: torch.Tensor, vectors: torch.Tensor, reverse: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forces [A, 3] and per-atom virials [A, 3, 3] from g = dE/d(vectors) [A, M, 3]."""
    forces = grad.sum(1) - reverse_sum(grad, reverse)
    virials = -torch.bmm(vectors.transpose(1, 2), grad)
    return forces, virials


def energy_forces_virials(model: nn.Module, numbers: torch.Tensor, vectors: torch.Tensor,
                          neighbours: torch.Tensor, reverse: torch.Tensor, create_graph: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-atom energies [A], forces [A, 3] and per-atom virials [A, 3, 3]; differentiable again when
    `create_graph` (the force loss of training)."""
    with torch.enable_grad():
        leaf = vectors.detach().requires_grad_(True)
        energies = model(numbers, leaf, neighbours, reverse)
        (grad,) = torch.autograd.grad(energies.sum(), leaf, create_graph=create_graph)
    forces, virials = forces_and_virials(grad, leaf if create_graph else vectors.detach(), reverse)
    if create_graph:
        return energies, forces, virials
    return energies.detach(), forces.detach(), virials.detach()


class EnergyForcesVirials(nn.Module):
    """Scriptable wrapper: forward(numbers, vectors, neighbours, reverse) -> (energies [A], forces [A, 3],
    virials [A, 3, 3]), the gradient taken inside the graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.cutoff = float(model.cutoff)

    def forward(self, numbers: torch.Tensor, vectors: torch.Tensor, neighbours: torch.Tensor,
                reverse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        previous = torch.is_grad_enabled()
        torch.set_grad_enabled(True)  # the call form: the context manager does not script
        leaf = vectors.clone().requires_grad_(True)  # clone, not detach: freezing drops detach
        energies = self.model(numbers, leaf, neighbours, reverse)
        grads = torch.autograd.grad([energies.sum()], [leaf])
        grad = grads[0]
        assert grad is not None
        torch.set_grad_enabled(previous)
        forces, virials = forces_and_virials(grad, vectors, reverse)
        return energies.detach(), forces, virials


def stress_from_virial(virial: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """ASE's stress -W / V [3, 3] (eV/A^3) of one structure, V the volume of its cell as given; NaN when the
    cell has no volume."""
    volume = abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64).reshape(3, 3))))
    if volume < 1e-9:
        return np.full((3, 3), np.nan)
    return -np.asarray(virial, dtype=np.float64) / volume
