"""Mixed precision: float16 pair work inside a float32 model.

The expensive part of the student is per pair: the continuous filters W = A (rbf * fcut) of shape
[F*B, N, N] and the neighbour sums over them.  The mixed model stores exactly those in float16 (the
filters, computed in float32 from the float32 radial basis and rounded once, and the batched neighbour-sum
matmuls over them) and keeps everything else in float32: positions, distances, the radial basis and
basis / distance (K values per pair, 16x smaller than the filters), the embedding,
the residual scalar and vector features, the Update blocks (including the vector norm, whose 1e-6 epsilon
is a float16 subnormal), the readout, and the energy sum with scale, shift and element references.
Casts sit at the boundaries (see `Message.forward`), so the autograd forces flow back through the float16
pair work into the float32 geometry and come out float32.

Placements measured on the tiny preset, ONNX Runtime CPU against float64 eager on calib/molecules.h5
(max / mean energy error per atom): the whole network in float16 1.4e-3; the radial basis rounded to
float16 before the filter product 1.26e-3 / 6.7e-4 (rounding K basis values shifts all 3F filters of a
pair together, a coherent error); filters rounded after a float32 product (this placement) 3.3e-4 /
6.1e-5.  Rounding positions in the vector message to float16 changed nothing measurable.
"""

from __future__ import annotations

import copy

from .config import ModelConfig
from .student import StudentModel


class MixedStudentModel(StudentModel):
    """A StudentModel whose pair tensors and neighbour sums run in float16."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        for message in self.messages:
            message.half_slots = True

    @classmethod
    def from_model(cls, model: StudentModel) -> "MixedStudentModel":
        """A mixed-precision copy of a float32 model (the original is left untouched)."""
        mixed = cls(model.config)
        mixed.load_state_dict(copy.deepcopy(model.state_dict()))
        return mixed.to(next(model.parameters()).device).eval()
