"""An independent reference of the student for tests: textbook PaiNN over an explicit all-pairs list with
brute-force periodic images, per-pair filters (unfactored), scatter-add neighbour sums, forces and virials
by autograd on positions and a strain.  O(N^2 * images), float64, small structures only."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from deploycc.model import StudentModel


def all_pairs(positions: torch.Tensor, cell: torch.Tensor, pbc: np.ndarray, cutoff: float, reach: int = 4):
    """(i, j, d_ij) for every pair and periodic image with |d| < cutoff + 1 (i != j or a non-zero image)."""
    n = positions.shape[0]
    ranges = [range(-reach, reach + 1) if p else range(1) for p in pbc]
    shifts = torch.tensor(list(itertools.product(*ranges)), dtype=positions.dtype)
    lattice = shifts @ cell  # [S, 3]
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    d = positions[j].unsqueeze(2) - positions[i].unsqueeze(2) + lattice  # [N, N, S, 3]
    zero = (shifts.abs().sum(1) == 0)
    keep = (d.detach().norm(dim=-1) < cutoff + 1.0) & ~((i == j).unsqueeze(-1) & zero)
    index = keep.nonzero()
    return index[:, 0], index[:, 1], d[keep]


def reference_energy(model: StudentModel, numbers, positions: torch.Tensor, cell: torch.Tensor, pbc) -> torch.Tensor:
    """Total energy of one structure; differentiable in positions and cell."""
    f = model.hidden
    i, j, d = all_pairs(positions, cell, np.asarray(pbc, dtype=bool), model.cutoff)
    dist = torch.sqrt((d * d).sum(-1) + 1e-6)
    envelope = 0.5 * (torch.cos(torch.clamp(dist, max=model.cutoff) * math.pi / model.cutoff) + 1.0)
    basis = torch.exp(-model.rbf.gamma * (dist[:, None] - model.rbf.centres.reshape(-1)) ** 2) * envelope[:, None]
    z = torch.as_tensor(numbers)
    s = model.embedding(z)
    v = torch.zeros(len(z), 3, f, dtype=s.dtype)
    for message, update in zip(model.messages, model.updates):
        weight = message.filter.weight
        w_s, w_vv = basis @ weight[:f].t(), basis @ weight[f : 2 * f].t()
        w_vs = (basis / dist[:, None]) @ weight[2 * f :].t()
        p_s, p_vv, p_vs = torch.split(message.phi(s), f, dim=-1)
        ds = torch.zeros_like(s).index_add(0, i, w_s * p_s[j])
        pair_v = (w_vs * p_vs[j]).unsqueeze(1) * d.unsqueeze(2) + (w_vv * p_vv[j]).unsqueeze(1) * v[j]
        dv = torch.zeros_like(v).index_add(0, i, pair_v)
        s, v = update(s + ds, v + dv)
    e = model.readout(s).squeeze(-1)
    return (model.scale * e + model.shift + model.element_ref[z]).sum()


def reference(model: StudentModel, atoms) -> tuple[float, np.ndarray, np.ndarray]:
    """(energy, forces [n, 3], virial [3, 3]) of an ase.Atoms, float64: virial = -dE/d(strain)."""
    model = model.double()
    positions = torch.tensor(atoms.positions, dtype=torch.float64, requires_grad=True)
    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    deformation = torch.eye(3, dtype=torch.float64) + strain
    cell = torch.tensor(atoms.cell.array, dtype=torch.float64)
    energy = reference_energy(model, atoms.numbers, positions @ deformation, cell @ deformation, atoms.pbc)
    grad, strain_grad = torch.autograd.grad(energy, [positions, strain])
    return float(energy), -grad.numpy(), -strain_grad.numpy()
