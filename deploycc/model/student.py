"""The PaiNN-style student: dense, padded batches in; total energies out (forces by autograd).

Batch layout: atomic numbers int64 [B, N] with 0 marking padding, positions float [B, N, 3].  Every pair
(i, j) is computed densely and masked, so graphs are static (no neighbour list, no loop over structures,
no host syncs) and export cleanly to TorchScript, ONNX and TensorRT.  Periodic models (config.periodic)
also take cells float [B, 3, 3] (rows are lattice vectors), pbc flags float [B, 3] (1.0 = periodic) and
integer lattice shifts float [S, 3]; see deploycc/periodic.py for the method.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .config import ModelConfig
from .lattice import allowed_shifts, minimum_image
from .layers import GaussianRBF, Message, Update, cosine_cutoff, safe_norm


class StudentModel(nn.Module):
    """Energy model E(Z, R) = sum_i [scale * e_i + shift + ref(Z_i)] over real atoms."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        f = config.hidden_dim
        self.hidden = f
        self.cutoff = float(config.cutoff)
        self.periodic = bool(config.periodic)
        self.embedding = nn.Embedding(config.max_z + 1, f, padding_idx=0)
        self.rbf = GaussianRBF(config.num_rbf, config.cutoff)
        self.messages = nn.ModuleList([Message(f, config.num_rbf, self.periodic) for _ in range(config.num_interactions)])
        self.updates = nn.ModuleList([Update(f) for _ in range(config.num_interactions)])
        self.readout = nn.Sequential(nn.Linear(f, f // 2), nn.SiLU(), nn.Linear(f // 2, 1))
        # Normalisation, fitted on the training set and saved with the weights.
        self.register_buffer("element_ref", torch.zeros(config.max_z + 1))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("shift", torch.zeros(()))

    def geometry(
        self,
        numbers: torch.Tensor,
        positions: torch.Tensor,
        cell: Optional[torch.Tensor] = None,
        pbc: Optional[torch.Tensor] = None,
        shifts: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Atom mask [B, N], centred positions [B, N, 3], and the masked radial basis and basis / distance
        [K, B*N*N] (envelope applied): everything that depends on positions."""
        if self.periodic:
            if cell is None or pbc is None or shifts is None:
                b = numbers.shape[0]
                cell = torch.eye(3, dtype=positions.dtype, device=positions.device).expand(b, 3, 3)
                pbc = torch.zeros(b, 3, dtype=positions.dtype, device=positions.device)
                shifts = torch.zeros(1, 3, dtype=positions.dtype, device=positions.device)
            return self.periodic_geometry(numbers, positions, cell, pbc, shifts)
        atom_mask = (numbers > 0).to(positions.dtype)
        n = numbers.shape[1]
        not_self = 1.0 - torch.eye(n, dtype=positions.dtype, device=positions.device)
        pair_mask = atom_mask.unsqueeze(2) * atom_mask.unsqueeze(1) * not_self  # [B, N, N]

        count = atom_mask.sum(1, keepdim=True).clamp(min=1.0)
        centre = (positions * atom_mask.unsqueeze(-1)).sum(1, keepdim=True) / count.unsqueeze(-1)
        centred = (positions - centre) * atom_mask.unsqueeze(-1)
        vec = centred.unsqueeze(1) - centred.unsqueeze(2)  # r_j - r_i, [B, N, N, 3]
        dist = safe_norm(vec, dim=-1)  # [B, N, N]
        envelope = cosine_cutoff(dist, self.cutoff) * pair_mask
        basis = self.rbf(dist) * envelope.reshape(1, -1)  # [K, B*N*N]
        basis_over_dist = basis / dist.reshape(1, -1)
        return atom_mask, centred, basis, basis_over_dist

    def periodic_geometry(
        self, numbers: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
        shifts: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Atom mask, masked positions, the image-summed basis G [K, B*N*N] and direction basis
        H [K, B*N*3*N]: pairs wrapped to the minimum image, then repeated over the lattice shifts."""
        b, n, s = numbers.shape[0], numbers.shape[1], shifts.shape[0]
        dtype = positions.dtype
        atom_mask = (numbers > 0).to(dtype)
        masked = positions * atom_mask.unsqueeze(-1)
        vec = (masked.unsqueeze(1) - masked.unsqueeze(2)).reshape(b, n * n, 3)  # r_j - r_i
        vec = minimum_image(vec, cell.to(dtype), pbc.to(dtype))
        lattice = torch.matmul(shifts.to(dtype).unsqueeze(0), cell.to(dtype))  # [B, S, 3]
        disp = vec.unsqueeze(2) + lattice.unsqueeze(1)  # [B, N*N, S, 3]
        dist = safe_norm(disp, dim=-1)  # [B, N*N, S]
        pair_mask = (atom_mask.unsqueeze(2) * atom_mask.unsqueeze(1)).reshape(b, n * n, 1)
        eye = torch.eye(n, dtype=dtype, device=positions.device).reshape(1, n * n, 1)
        zero_shift = ((shifts.abs().sum(-1) < 0.5).to(dtype)).reshape(1, 1, s)
        mask = pair_mask * allowed_shifts(shifts.to(dtype), pbc.to(dtype)).unsqueeze(1) * (1.0 - eye * zero_shift)
        basis = self.rbf(dist) * (cosine_cutoff(dist, self.cutoff) * mask).reshape(1, -1)  # [K, B*N*N*S]
        k = basis.shape[0]
        summed = basis.reshape(k, b * n * n, s).sum(-1)
        over = (basis / dist.reshape(1, -1)).reshape(k, b * n * n, s, 1)
        direction = (over * disp.reshape(1, b * n * n, s, 3)).sum(2)  # [K, B*N*N, 3]
        direction = direction.reshape(k, b, n, n, 3).permute(0, 1, 2, 4, 3).reshape(k, b * n * 3 * n)
        return atom_mask, masked, summed, direction

    def features(
        self, numbers: torch.Tensor, centred: torch.Tensor, basis: torch.Tensor, basis_over_dist: torch.Tensor
    ) -> torch.Tensor:
        """Embedding and interactions: per-atom scalar features [B, N, F]."""
        s = self.embedding(numbers)
        v = torch.zeros(s.shape[0], s.shape[1], 3, s.shape[2], dtype=s.dtype, device=s.device)
        first = True
        for message, update in zip(self.messages, self.updates):
            s, v = message(s, v, basis, basis_over_dist, centred, first)
            s, v = update(s, v)
            first = False
        return s

    def network(
        self, numbers: torch.Tensor, centred: torch.Tensor, basis: torch.Tensor, basis_over_dist: torch.Tensor
    ) -> torch.Tensor:
        """Raw per-atom outputs [B, N]: features, then the readout MLP."""
        return self.readout(self.features(numbers, centred, basis, basis_over_dist)).squeeze(-1)

    def atomic_energies(
        self,
        numbers: torch.Tensor,
        positions: torch.Tensor,
        cell: Optional[torch.Tensor] = None,
        pbc: Optional[torch.Tensor] = None,
        shifts: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Per-atom energies [B, N] in eV, zero on padding."""
        atom_mask, centred, basis, basis_over_dist = self.geometry(numbers, positions, cell, pbc, shifts)
        e = self.network(numbers, centred, basis, basis_over_dist).to(positions.dtype)
        e = self.scale * e + self.shift + self.element_ref[numbers]
        return e * atom_mask

    def forward(
        self,
        numbers: torch.Tensor,
        positions: torch.Tensor,
        cell: Optional[torch.Tensor] = None,
        pbc: Optional[torch.Tensor] = None,
        shifts: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Total energies [B] in eV."""
        return self.atomic_energies(numbers, positions, cell, pbc, shifts).sum(1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def energy_and_forces(
    model: nn.Module, numbers: torch.Tensor, positions: torch.Tensor, *periodic: torch.Tensor,
    create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies [B] and forces -dE/dR [B, N, 3]; differentiable again when `create_graph` (training).
    `periodic` is (cell, pbc, shifts) for periodic models."""
    with torch.enable_grad():
        pos = positions.clone().requires_grad_(True)
        energy = model(numbers, pos, *periodic)
        (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)
    if create_graph:
        return energy, -grad
    return energy.detach(), -grad.detach()


class EnergyForces(nn.Module):
    """Scriptable wrapper whose forward returns (energy [B], forces [B, N, 3])."""

    def __init__(self, model: StudentModel) -> None:
        super().__init__()
        self.model = model
        self.periodic = bool(model.periodic)  # read by runners: a periodic artifact takes cell, pbc, shifts
        self.cutoff = float(model.cutoff)

    def forward(
        self,
        numbers: torch.Tensor,
        positions: torch.Tensor,
        cell: Optional[torch.Tensor] = None,
        pbc: Optional[torch.Tensor] = None,
        shifts: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        previous = torch.is_grad_enabled()
        torch.set_grad_enabled(True)  # the call form: the context manager does not script
        pos = positions.clone().requires_grad_(True)  # clone, not detach: freezing drops detach
        energy = self.model(numbers, pos, cell, pbc, shifts)
        grads = torch.autograd.grad([energy.sum()], [pos])
        grad = grads[0]
        assert grad is not None
        torch.set_grad_enabled(previous)
        return energy.detach(), -grad.detach()
