"""Building blocks of the dense PaiNN student: radial basis, cutoff, message and update blocks.

Per-atom tensors are atom-major: scalars `s` [B, N, F], vectors `v` [B, N, 3, F].  Pair tensors are
feature-major, [B, C, N, N], so that every sum over neighbours j is a batched matrix product and no
[pairs x features] tensor is ever multiplied element-wise.  Linear layers act on the feature axis only:
vector features are mixed across channels, never across x/y/z (rotation equivariance).

PaiNN's continuous filter is W_ij = A (rbf(d_ij) * fcut(d_ij)), linear without bias, so the envelope
multiplies the filter output exactly while costing K instead of 3F multiplications per pair.
The vector message sum_j W_ij phi_j u_ij uses u_ij = (r_j - r_i) / d_ij, i.e.
sum_j (W_ij / d_ij) phi_j r_j - r_i sum_j (W_ij / d_ij) phi_j, on positions centred per structure.
Periodic models sum each pair over its lattice images s; the filter being linear, the geometry hands over
G_ij = sum_s basis_ijs and H_ij = sum_s basis_ijs u_ijs (per x/y/z), and the vector message is A H_ij.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

# Epsilon inside square roots of possibly-zero squared norms.  Must stay >= 1e-6: graph optimisers fold
# smaller constants to zero, after which padded atoms produce NaN forces.
NORM_EPS = 1e-6


def safe_norm(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Euclidean norm with a finite gradient at zero."""
    return torch.sqrt((x * x).sum(dim) + 1e-6)  # NORM_EPS, inlined for TorchScript


class GaussianRBF(nn.Module):
    """Gaussians with centres spread evenly on [0, cutoff], expanded on a new leading axis: [K, ...]."""

    def __init__(self, num_rbf: int, cutoff: float) -> None:
        super().__init__()
        centres = torch.linspace(0.0, cutoff, num_rbf)
        width = cutoff / max(num_rbf - 1, 1)
        self.register_buffer("centres", centres.view(num_rbf, 1))
        self.gamma = 0.5 / (width * width)

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        diff = dist.reshape(1, -1) - self.centres  # [K, B*N*N]
        return torch.exp(-self.gamma * diff * diff)


def cosine_cutoff(dist: torch.Tensor, cutoff: float) -> torch.Tensor:
    """0.5 (cos(pi d / rc) + 1) for d < rc, exactly 0 beyond; value and slope vanish at rc."""
    clamped = torch.clamp(dist, max=cutoff)
    return 0.5 * (torch.cos(clamped * (math.pi / cutoff)) + 1.0)


def neighbour_sum(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum_j weights[g, i, j] * values[g, j, c] -> [g, i, c] as one batched matmul (g = feature x batch)."""
    return torch.bmm(weights, values)


@contextmanager
def columns_by_matmul(model: nn.Module) -> Iterator[None]:
    """While exporting ONNX: take the vector message's columns apart by constant products, not slices."""
    messages = [m for m in model.modules() if isinstance(m, Message)]
    previous = [m.columns_by_matmul for m in messages]
    for message in messages:
        message.columns_by_matmul = True
    try:
        yield
    finally:
        for message, value in zip(messages, previous):
            message.columns_by_matmul = value


class Message(nn.Module):
    """Continuous-filter message from neighbours j to atom i."""

    def __init__(self, hidden: int, num_rbf: int, periodic: bool = False) -> None:
        super().__init__()
        self.hidden = hidden
        self.periodic = periodic
        self.half_pairs = False  # set by the mixed-precision model: pair tensors and neighbour sums in float16
        self.columns_by_matmul = False  # set while exporting ONNX (see `columns_by_matmul`)
        self.phi = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden))
        self.filter = nn.Linear(num_rbf, 3 * hidden, bias=False)

    def forward(
        self,
        s: torch.Tensor,
        v: torch.Tensor,
        basis: torch.Tensor,
        basis_over_dist: torch.Tensor,
        centred: torch.Tensor,
        vectors_zero: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """basis, basis_over_dist: [K, B*N*N] (envelope and masks applied); centred: [B, N, 3].
        Periodic: basis_over_dist is instead the image-summed direction basis H [K, B*N*3*N].
        `vectors_zero`: v is all zeros (the first interaction), so the vector-to-vector message is skipped
        (one filter product, one neighbour sum and their gradients; the result is unchanged).

        With `half_pairs` the filters W = A basis are computed in float32 and stored in float16 (rounding
        the K-wide basis instead would shift every filter of a pair coherently: 4x the energy error), the
        per-atom inputs of the neighbour sums are cast to float16 and the sums cast back to float32."""
        f = self.hidden
        b, n = s.shape[0], s.shape[1]
        weight = self.filter.weight  # [3F, K]
        # One product per filter (not one over 3F rows, then sliced) keeps every pair tensor contiguous.
        w_s = torch.mm(weight[:f], basis)
        w_vs = torch.mm(weight[2 * f :], basis_over_dist)
        if self.half_pairs:
            w_s, w_vs = w_s.half(), w_vs.half()
        pair = w_s.dtype
        w_s = w_s.reshape(f * b, n, n)
        w_vs = w_vs.reshape(f * b, n * 3, n) if self.periodic else w_vs.reshape(f * b, n, n)

        phi = self.phi(s).permute(2, 0, 1).to(pair)  # [3F, B, N]
        p_s, p_vv, p_vs = torch.split(phi, f, dim=0)

        ds = neighbour_sum(w_s, p_s.reshape(f * b, n, 1)).reshape(f, b, n).to(s.dtype)
        if self.periodic:
            dvs = neighbour_sum(w_vs, p_vs.reshape(f * b, n, 1)).reshape(f, b, n, 3).to(s.dtype)
        else:
            # One product on [p r, p] (4 columns), then the columns are taken apart.  For ONNX they are taken
            # apart by multiplying with constant 4x3 / 4x1 selections: a sliced last axis makes ONNX Runtime
            # transpose [4, B, N, F] tensors (~8% of its time).  Elsewhere slices are free views, where the
            # selection products would be four more matrix-product kernels per interaction on a GPU.
            r = centred.unsqueeze(0)  # [1, B, N, 3]
            rhs = torch.cat([p_vs.unsqueeze(-1) * r.to(pair), p_vs.unsqueeze(-1)], dim=-1).reshape(f * b, n, 4)
            radial = neighbour_sum(w_vs, rhs).to(s.dtype).reshape(f * b * n, 4)
            if self.columns_by_matmul:
                select = torch.eye(4, dtype=s.dtype, device=s.device)
                toward = torch.mm(radial, select[:, :3]).reshape(f, b, n, 3)
                weight_sum = torch.mm(radial, select[:, 3:]).reshape(f, b, n, 1)
            else:
                toward = radial[:, :3].reshape(f, b, n, 3)
                weight_sum = radial[:, 3:].reshape(f, b, n, 1)
            dvs = toward - r * weight_sum
        if not vectors_zero:
            w_vv = torch.mm(weight[f : 2 * f], basis)
            if self.half_pairs:
                w_vv = w_vv.half()
            v_fm = v.permute(3, 0, 1, 2).to(pair)  # [F, B, N, 3]
            dvv = neighbour_sum(w_vv.reshape(f * b, n, n), (p_vv.unsqueeze(-1) * v_fm).reshape(f * b, n, 3))
            dvs = dvs + dvv.to(s.dtype).reshape(f, b, n, 3)

        s = s + ds.permute(1, 2, 0)
        v = v + dvs.permute(1, 2, 3, 0)
        return s, v


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
