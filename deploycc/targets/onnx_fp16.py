"""ONNX fp16-mixed: the mixed-precision student (float16 pair work inside a float32 model) as one ONNX graph.

Exported by the fp32 pipeline (`onnx_export.export_onnx`: make_fx of energy + autograd gradient, the
dynamo exporter with dynamic batch and atom axes, onnxsim, onnx.checker) applied to
`deploycc.model.mixed.MixedStudentModel`.  Inputs int64 numbers and float32 positions; outputs float32
energy and forces.  Float16 in the graph: the filter products of the radial basis, the batched
neighbour-sum MatMuls over the [F*B, N, N] pair tensors (forward and backward) and the reshapes between
them.  Float32: all geometry (Sqrt, Exp, Cos/Sin, Div, Clip), the embedding, the per-atom features and
Update blocks, the readout and the energy sum (see deploycc/model/mixed.py).

ONNX Runtime's CPU provider (onnxruntime 1.32, x86-64, checked on the saved optimized graph) runs the file
unchanged but has float16 kernels only for data movement (Gather, Reshape, Transpose, Concat, Split,
Slice, Expand, ScatterND): for MatMul, Gemm, Add, Mul, ... its InsertCastTransformer wraps each node in
Casts at session creation and computes in float32.  So on CPU the values are rounded to float16 between
ops but the arithmetic is float32; float16 arithmetic happens on GPUs (ORT's CUDA provider, and TensorRT
through the `trt` target, which builds from this file).  No op had to be moved to float32 for ORT CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..model import StudentModel
from ..model.mixed import MixedStudentModel
from .base import Exported, Runner, register
from .onnx import OnnxTarget, OrtRunner
from .onnx_export import export_onnx
from .settings import TargetSettings


def export_mixed_onnx(model: StudentModel, settings: TargetSettings, path: Path) -> dict[str, Any]:
    """Write the fp16-mixed energy+forces ONNX graph of `model` to `path`; returns manifest notes."""
    mixed = MixedStudentModel.from_model(model.to(settings.device))
    notes = export_onnx(mixed, settings, path)
    return {**notes, "precision": "fp16-mixed", "fp32": "geometry, embedding, per-atom features, update blocks, readout, energy sum",
            "fp16": "filter products and neighbour sums over the pair tensors"}


class OnnxFp16Target(OnnxTarget):
    name = "onnx-fp16"
    artifact_file = "model.onnx"
    description = "ONNX with float16 pair tensors in a float32 model (energy + forces), on ONNX Runtime"
    devices = ("cpu", "cuda")

    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        path = out_dir / self.artifact_file
        return Exported(path, export_mixed_onnx(model, settings, path))

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        return OrtRunner(artifact, settings.device, settings.extra.get("threads"))


register(OnnxFp16Target())
