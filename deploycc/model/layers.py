"""Building blocks of the PaiNN student over the padded neighbour layout: radial basis, cutoff, message
and update blocks.

Per-atom tensors: scalars `s` [A, F], vectors `v` [A, 3, F].  Per-slot tensors are [A, M, ...] (atom i,
its m-th neighbour slot).  Linear layers act on the feature axis only: vector features are mixed across
channels, never across x/y/z (rotation equivariance).

PaiNN's continuous filter is W_ij = A (rbf(d_ij) * fcut(d_ij)), linear in the K-wide radial basis, so
every neighbour sum factors: sum_j W_ij * x_j = A . sum_j basis_ij (x) x_j.  The per-slot work is then one
contraction of the K-wide (or 3K-wide, for directions) basis with gathered neighbour features
(`pairs.filtered_contract`), and A is applied per atom; no [slots x features] filter tensor exists.
The vector message sum_j W_ij phi_j u_ij uses the image-resolved pair vectors d_ij directly (periodic
images are separate slots), so molecules and periodic cells go through the same network.
"""


# No `from __future__ import annotations` here: TorchScript cannot resolve postponed annotations of the
# @torch.jit.unused method below.
import math

import torch
from torch import nn

from .pairs import filtered_contract, filtered_sum, take

# Epsilon inside square roots of possibly-zero squared norms.  Must stay >= 1e-6: graph optimisers fold
# smaller constants to zero, after which zero-length inputs produce NaN gradients.
NORM_EPS = 1e-6


def safe_norm(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Euclidean norm with a finite gradient at zero."""
    return torch.sqrt((x * x).sum(dim) + 1e-6)  # NORM_EPS, inlined for TorchScript


class GaussianRBF(nn.Module):
    """Gaussians with centres spread evenly on [0, cutoff], expanded on a new last axis: [..., K]."""

    def __init__(self, num_rbf: int, cutoff: float) -> None:
        super().__init__()
        centres = torch.linspace(0.0, cutoff, num_rbf)
        width = cutoff / max(num_rbf - 1, 1)
        self.register_buffer("centres", centres.view(num_rbf, 1))  # [K, 1]: the checkpoints' layout
        self.gamma = 0.5 / (width * width)

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        diff = dist.unsqueeze(-1) - self.centres.reshape(-1)
        return torch.exp(-self.gamma * diff * diff)


def cosine_cutoff(dist: torch.Tensor, cutoff: float) -> torch.Tensor:
    """0.5 (cos(pi d / rc) + 1) for d < rc, exactly 0 beyond; value and slope vanish at rc."""
    clamped = torch.clamp(dist, max=cutoff)
    return 0.5 * (torch.cos(clamped * (math.pi / cutoff)) + 1.0)


class Message(nn.Module):
    """Continuous-filter message from neighbours j to atom i."""

    def __init__(self, hidden: int, num_rbf: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.recompute = False  # inference: scatter-free contractions that recompute gathers (pairs)
        self.block_bytes = 0  # eager inference: contract atoms in blocks of about this many gathered bytes
        self.half_slots = False  # set by the mixed-precision model: per-slot contractions in float16
        self.phi = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden))
        self.filter = nn.Linear(num_rbf, 3 * hidden, bias=False)

    @torch.jit.unused
    def _contract_recompute(self, basis: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                            neighbours: torch.Tensor, reverse: torch.Tensor, groups: int) -> torch.Tensor:
        width = neighbours.shape[1] * x.shape[1] * x.element_size()
        block = max(int(self.block_bytes // max(width, 1)), 1) if self.block_bytes else 0
        return filtered_contract(basis, x, weight, neighbours, reverse, groups, recompute=True, block=block)

    def contract(self, basis: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, neighbours: torch.Tensor,
                 reverse: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """sum_k weight[k, c] sum_m basis[i, m, k * G + g] x[neighbours[i, m], c] -> [A, G, C]
        (see pairs.filtered_contract).  With `half_slots` the basis and the features are rounded to float16
        and summed over slots in float16; the filter is applied in float32."""
        if self.half_slots:
            basis, x = basis.half(), x.half()
        if self.recompute:
            return self._contract_recompute(basis, x, weight, neighbours, reverse, groups)
        return filtered_sum(basis, take(x, neighbours), weight, groups)

    def forward(self, s: torch.Tensor, v: torch.Tensor, basis: torch.Tensor, directions: torch.Tensor,
                neighbours: torch.Tensor, reverse: torch.Tensor, vectors_zero: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """basis [A, M, K] (envelope applied; zero on padding slots), directions [A, M, 3K] (basis_k * d_c /
        |d|, index k * 3 + c).  `vectors_zero`: v is all zeros (the first interaction), so the vector-to-vector
        message is skipped (the result is unchanged)."""
        f = self.hidden
        a = s.shape[0]
        weight = self.filter.weight  # [3F, K]: scalar, vector-vector, vector-scalar filters
        w_s, w_vv, w_vs = weight[:f].t(), weight[f : 2 * f].t(), weight[2 * f :].t()
        p_s, p_vv, p_vs = torch.split(self.phi(s), f, dim=-1)
        dv = self.contract(directions, p_vs, w_vs, neighbours, reverse, 3)  # [A, 3, F]
        ds = self.contract(basis, p_s, w_s, neighbours, reverse).reshape(a, f)
        if not vectors_zero:
            # The three vector-vector messages share the radial basis and the filter: one contraction over
            # the xyz components of p_vv v laid side by side ([A, 3F]), the filter repeated for each.
            y = (p_vv.unsqueeze(1) * v).reshape(a, 3 * f)
            dv = dv + self.contract(basis, y, w_vv.repeat(1, 3), neighbours, reverse).reshape(a, 3, f)
        return s + ds, v + dv


class Update(nn.Module):
    """Per-atom mixing of scalar and vector channels."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.u = nn.Linear(hidden, hidden, bias=False)
        self.w = nn.Linear(hidden, hidden, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden))

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        uv = self.u(v)
        wv = self.w(v)
        a = self.mlp(torch.cat([s, safe_norm(wv, dim=-2)], dim=-1))
        a_vv, a_sv, a_ss = torch.split(a, self.hidden, dim=-1)
        v = v + a_vv.unsqueeze(-2) * uv
        s = s + a_sv * (uv * wv).sum(-2) + a_ss
        return s, v
