"""The PaiNN-style student over a padded neighbour list: pair vectors in, per-atom energies out.

Input layout (built on the host from a neighbour-list library, deploycc/runtime/neighbours.py):

    numbers     int64   [A]        atomic numbers of every atom of every structure in the request
    vectors     float   [A, M, 3]  pair vectors r_j + shift - r_i of atom i's M neighbour slots
    neighbours  int64   [A, M]     j of each slot (padding slots: i itself)
    reverse     int64   [A, M]     flat index j * M + m' of the slot holding i among j's neighbours

Structures are concatenated atom-wise and never share a neighbour, so a batch needs no structure index
in the graph; periodic images are ordinary slots with their own vectors, so periodicity is a property
of the input, not of the model.  Padding slots carry vectors longer than the cutoff: their envelope and
every gradient through them are exactly zero.  Work and memory are O(A * M).

Energy E = sum_i [scale * e_i + shift + ref(Z_i)]; forces and virials are exact gradients with respect to
the pair vectors (deploycc/model/forces.py).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .layers import GaussianRBF, Message, Update, cosine_cutoff, safe_norm


class StudentModel(nn.Module):
    """Per-atom energies e_i(Z, neighbourhood) in eV."""

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

    def set_recompute(self, enabled: bool, block_bytes: float = 0) -> "StudentModel":
        """Inference mode of the neighbour contractions: scatter-free backward, gathers recomputed
        (see deploycc/model/pairs.py); off for training, whose force loss differentiates twice.
        `block_bytes` > 0 (eager only, never for an exported graph): contract the atoms in blocks whose
        gathered features take about this many bytes."""
        for message in self.messages:
            message.recompute = enabled
            message.block_bytes = int(block_bytes) if enabled else 0
        return self

    def geometry(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Radial basis [A, M, K] with the cutoff envelope applied, and directions [A, M, 3K]
        (basis_k * d_c / |d|): everything that depends on positions."""
        a, m = vectors.shape[0], vectors.shape[1]
        dist = safe_norm(vectors, dim=-1)  # [A, M]
        basis = self.rbf(dist) * cosine_cutoff(dist, self.cutoff).unsqueeze(-1)
        directions = ((basis / dist.unsqueeze(-1)).unsqueeze(-1) * vectors.unsqueeze(-2)).reshape(a, m, -1)
        return basis, directions

    def features(self, numbers: torch.Tensor, vectors: torch.Tensor, neighbours: torch.Tensor,
                 reverse: torch.Tensor) -> torch.Tensor:
        """Embedding and interactions: per-atom scalar features [A, F]."""
        basis, directions = self.geometry(vectors)
        s = self.embedding(numbers)
        v = torch.zeros(s.shape[0], 3, s.shape[1], dtype=s.dtype, device=s.device)
        first = True
        for message, update in zip(self.messages, self.updates):
            s, v = message(s, v, basis, directions, neighbours, reverse, first)
            s, v = update(s, v)
            first = False
        return s

    def forward(self, numbers: torch.Tensor, vectors: torch.Tensor, neighbours: torch.Tensor,
                reverse: torch.Tensor) -> torch.Tensor:
        """Per-atom energies [A] in eV (sum them per structure for total energies)."""
        e = self.readout(self.features(numbers, vectors, neighbours, reverse)).squeeze(-1).to(vectors.dtype)
        return self.scale * e + self.shift + self.element_ref[numbers]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
