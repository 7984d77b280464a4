"""Mixed precision: float16 pair work inside a float32 model.

The expensive part of the student is per pair: the continuous filters W = A (rbf * fcut) of shape
[F*B, N, N] and the neighbour sums over them.  The mixed model runs exactly that in float16 (the filter
weights, the radial basis and basis / distance, and the batched neighbour-sum matmuls) and keeps
everything per atom in float32: positions, distances and the radial basis as computed, the embedding,
the residual scalar and vector features, the Update blocks (including the vector norm, whose 1e-6 epsilon
is a float16 subnormal), the readout, and the energy sum with scale, shift and element references.
Casts sit at the boundaries (see `Message.forward`), so the autograd forces flow back through the float16
pair work into the float32 geometry and come out float32.

An earlier placement (the whole network in float16) missed the 1e-3 eV/atom energy tolerance on the
trained tiny preset (1.4e-3): float16 rounding of the accumulated per-atom features is what costs accuracy,
not the pair products.
"""

from __future__ import annotations

import copy

import torch

from .student import StudentModel

PAIR_DTYPE = torch.float16


class MixedStudentModel(StudentModel):
    """A StudentModel whose pair tensors and neighbour sums run in float16."""

    @classmethod
    def from_model(cls, model: StudentModel) -> "MixedStudentModel":
        """A mixed-precision copy of a float32 model (the original is left untouched)."""
        mixed = cls(model.config)
        mixed.load_state_dict(copy.deepcopy(model.state_dict()))
        return mixed.to(next(model.parameters()).device).eval()

    def features(self, numbers: torch.Tensor, centred: torch.Tensor, basis: torch.Tensor,
                 basis_over_dist: torch.Tensor) -> torch.Tensor:
        """The float32 features, with the pair inputs (basis, basis / distance) cast to float16."""
        return super().features(numbers, centred, basis.to(PAIR_DTYPE), basis_over_dist.to(PAIR_DTYPE))

