"""ONNX fp16-mixed: the mixed-precision student (float16 neighbour contractions inside a float32 model) as one
ONNX graph, exported like the fp32 one (deploycc/targets/onnx_export.py).

Float16 in the graph: the per-slot radial basis and directions and the gathered neighbour features of the
contractions, and the batched MatMuls over them (forward and backward).  Float32: the pair geometry
(Sqrt, Exp, Cos/Sin, Div, Clip), the embedding, the per-atom filters and features, the Update blocks, the
readout and the energies (see deploycc/model/mixed.py).

ONNX Runtime's CPU provider has float16 kernels only for data movement (Gather, Reshape, Transpose, ...):
for MatMul it inserts Casts and computes in float32, so on CPU values are rounded between ops but the
arithmetic is float32; float16 arithmetic happens on GPUs (ORT's CUDA provider, and TensorRT through the
`trt` target, which builds from this file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..model import StudentModel
from ..model.mixed import MixedStudentModel
from .base import Exported, register
from .onnx import OnnxTarget
from .onnx_export import export_onnx
from .settings import MemoryModel, TargetSettings, Tolerances

# float16 slot work: see deploycc/model/mixed.py for the measured errors of each placement.
FP16_TOLERANCES = Tolerances(energy_per_atom_abs=1e-3, forces_abs=1e-2, forces_rel=1e-2, virial_per_atom_abs=2e-3)


def export_mixed_onnx(model: StudentModel, settings: TargetSettings, path: Path) -> dict[str, Any]:
    """Write the fp16-mixed ONNX graph of `model` to `path`; returns manifest notes."""
    mixed = MixedStudentModel.from_model(model.to(settings.device))
    notes = export_onnx(mixed, settings, path)
    return {**notes, "precision": "fp16-mixed",
            "fp32": "geometry, embedding, per-atom filters and features, update blocks, readout, energies",
            "fp16": "per-slot basis and gathered neighbour features, and their contractions"}


@register
class OnnxFp16Target(OnnxTarget):
    name = "onnx-fp16"
    artifact_file = "model.onnx"
    description = "ONNX with float16 neighbour contractions in a float32 model, on ONNX Runtime"
    defaults = TargetSettings(target="onnx-fp16", precision="fp16-mixed", tolerances=FP16_TOLERANCES,
                              memory=MemoryModel(base=0.5e9, per_slot=5.0e3), extra={"chunk_atoms": 256})

    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        path = out_dir / self.artifact_file
        return Exported(path, export_mixed_onnx(model, settings, path))
