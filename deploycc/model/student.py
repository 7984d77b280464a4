"""The PaiNN-style student: dense, padded batches in; total energies out (forces by autograd).

Batch layout: atomic numbers int64 [B, N] with 0 marking padding, positions float [B, N, 3].  Every pair
(i, j) is computed densely and masked, so graphs are static (no neighbour list, no loop over structures,
no host syncs) and export cleanly to TorchScript, ONNX and TensorRT.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .layers import GaussianRBF, Message, Update, cosine_cutoff, safe_norm


class StudentModel(nn.Module):
    """Energy model E(Z, R) = sum_i [scale * e_i + shift + ref(Z_i)] over real atoms."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        f = config.hidden_dim
        self.hidden = f
        self.cutoff = float(config.cutoff)
        self.embedding = nn.Embedding(config.max_z + 1, f, padding_idx=0)
        self.rbf = GaussianRBF(config.num_rbf, config.cutoff)
        self.messages = nn.ModuleList([Message(f, config.num_rbf) for _ in range(config.num_interactions)])
        self.updates = nn.ModuleList([Update(f) for _ in range(config.num_interactions)])
        self.readout = nn.Sequential(nn.Linear(f, f // 2), nn.SiLU(), nn.Linear(f // 2, 1))
        # Normalisation, fitted on the training set and saved with the weights.
        self.register_buffer("element_ref", torch.zeros(config.max_z + 1))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("shift", torch.zeros(()))

    def geometry(
        self, numbers: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Atom mask [B, N], centred positions [B, N, 3], and the masked radial basis and basis / distance
        [K, B*N*N] (envelope applied): everything that depends on positions."""
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

    def features(
        self, numbers: torch.Tensor, centred: torch.Tensor, basis: torch.Tensor, basis_over_dist: torch.Tensor
    ) -> torch.Tensor:
        """Embedding and interactions: per-atom scalar features [B, N, F]."""
        s = self.embedding(numbers)
        v = torch.zeros(s.shape[0], s.shape[1], 3, s.shape[2], dtype=s.dtype, device=s.device)
        for message, update in zip(self.messages, self.updates):
            s, v = message(s, v, basis, basis_over_dist, centred)
            s, v = update(s, v)
        return s

    def network(
        self, numbers: torch.Tensor, centred: torch.Tensor, basis: torch.Tensor, basis_over_dist: torch.Tensor
    ) -> torch.Tensor:
        """Raw per-atom outputs [B, N]: features, then the readout MLP."""
        return self.readout(self.features(numbers, centred, basis, basis_over_dist)).squeeze(-1)

    def atomic_energies(self, numbers: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Per-atom energies [B, N] in eV, zero on padding."""
        atom_mask, centred, basis, basis_over_dist = self.geometry(numbers, positions)
        e = self.network(numbers, centred, basis, basis_over_dist).to(positions.dtype)
        e = self.scale * e + self.shift + self.element_ref[numbers]
        return e * atom_mask

    def forward(self, numbers: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Total energies [B] in eV."""
        return self.atomic_energies(numbers, positions).sum(1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def energy_and_forces(
    model: nn.Module, numbers: torch.Tensor, positions: torch.Tensor, create_graph: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies [B] and forces -dE/dR [B, N, 3]; differentiable again when `create_graph` (training)."""
    with torch.enable_grad():
        pos = positions.clone().requires_grad_(True)
        energy = model(numbers, pos)
        (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)
    if create_graph:
        return energy, -grad
    return energy.detach(), -grad.detach()


class EnergyForces(nn.Module):
    """Scriptable wrapper whose forward returns (energy [B], forces [B, N, 3])."""

    def __init__(self, model: StudentModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, numbers: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        previous = torch.is_grad_enabled()
        torch.set_grad_enabled(True)  # the call form: the context manager does not script
        pos = positions.clone().requires_grad_(True)  # clone, not detach: freezing drops detach
        energy = self.model(numbers, pos)
        grads = torch.autograd.grad([energy.sum()], [pos])
        grad = grads[0]
        assert grad is not None
        torch.set_grad_enabled(previous)
        return energy.detach(), -grad.detach()
