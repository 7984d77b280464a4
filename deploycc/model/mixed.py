"""Mixed precision: float32 geometry around a float16 network.

Float32: positions, centring, distances, radial basis, cutoff envelope, basis / distance, and the final
per-atom energy (scale, shift, element references, the sum over atoms).  Float16: the embedding output,
the Message and Update blocks and the readout MLP, with their weights.  Casts sit at the boundary, so the
autograd forces flow back through the float16 network into the float32 geometry and come out float32.

One float16 exception inside the network: the vector-channel norm of each Update block is taken in
float32.  Padded atoms have exactly zero vector features, so that norm is sqrt(0 + 1e-6); 1e-6 is a
subnormal in float16, which GPU kernels may flush to zero, and the gradient 0/sqrt(0) would then turn
every force into NaN.  The norm is per atom (B x N x F), so keeping it float32 costs almost nothing.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .layers import Update, safe_norm
from .student import StudentModel

NETWORK_DTYPE = torch.float16


class MixedUpdate(Update):
    """Update block whose channel mixing is float16 and whose vector norm is float32."""

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        uv = self.u(v)
        wv = self.w(v)
        norm = safe_norm(wv.float(), dim=-2).to(s.dtype)
        a = self.mlp(torch.cat([s, norm], dim=-1))
        a_vv, a_sv, a_ss = torch.split(a, self.hidden, dim=-1)
        v = v + a_vv.unsqueeze(-2) * uv
        s = s + a_sv * (uv * wv).sum(-2) + a_ss
        return s, v


def _mixed_update(update: Update) -> MixedUpdate:
    mixed = MixedUpdate(update.hidden)
    mixed.load_state_dict(update.state_dict())
    return mixed


class MixedStudentModel(StudentModel):
    """A StudentModel whose network runs in float16 between float32 geometry and float32 energies."""

    @classmethod
    def from_model(cls, model: StudentModel) -> "MixedStudentModel":
        """A mixed-precision copy of a float32 model (the original is left untouched)."""
        mixed = cls(model.config)
        mixed.load_state_dict(copy.deepcopy(model.state_dict()))
        mixed.updates = nn.ModuleList([_mixed_update(u) for u in mixed.updates])
        for module in (mixed.embedding, mixed.messages, mixed.updates, mixed.readout):
            module.half()
        return mixed.to(next(model.parameters()).device).eval()

    def network(self, numbers: torch.Tensor, centred: torch.Tensor, basis: torch.Tensor,
                basis_over_dist: torch.Tensor) -> torch.Tensor:
        """The float32 geometry cast to float16 at the boundary; raw per-atom outputs [B, N] in float16
        (the caller casts them back before the float32 energy sum)."""
        half = NETWORK_DTYPE
        return super().network(numbers, centred.to(half), basis.to(half), basis_over_dist.to(half))


def mixed_precision(model: StudentModel) -> MixedStudentModel:
    """Shorthand for MixedStudentModel.from_model."""
    return MixedStudentModel.from_model(model)
