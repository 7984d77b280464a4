"""Pre-flight for TensorRT: refuse, on CPU and before any build, an ONNX graph its parser cannot import.

The supported-operator list below is the "Y" rows of onnx/onnx-tensorrt `docs/operators.md` for
TensorRT 10.15 (opsets 9 to 24).  Older 10.x parsers lack a few of the newest ops (Attention,
RotaryEmbedding, RMSNormalization, TensorScatter), none of which the exporter emits.  Also refused:
ScatterND and ScatterElements with a `reduction` other than "none" (ScatterND's documented restriction;
ScatterElements' reductions need NVIDIA's plugin, and scatter-add sums with atomics, non-deterministically),
and nodes of any domain but the default one (custom ops would need plugins).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..errors import DeployccError

SOURCE = "onnx/onnx-tensorrt docs/operators.md, TensorRT 10.15"
OPSET_RANGE = (9, 24)

SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater
GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax
Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish
Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
Reshape Resize ReverseSequence RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan
Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter ThresholdedRelu Tile TopK Transpose
Trilu Unsqueeze Upsample Where Xor
""".split())

_SCATTER_OPS = ("ScatterND", "ScatterElements")


class TensorRTPreflightError(DeployccError):
    """An ONNX graph holds a node that TensorRT's ONNX parser would refuse."""


def _nodes(graph) -> Iterator:
    """Every node of a graph, including those of If/Loop/Scan subgraphs."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _nodes(attribute.g)
            for sub in attribute.graphs:
                yield from _nodes(sub)


def _reduction(node) -> str:
    for attribute in node.attribute:
        if attribute.name == "reduction":
            return attribute.s.decode()
    return "none"


def node_problem(node) -> str | None:
    """Why TensorRT would refuse this node, or None."""
    label = f"node '{node.name or '<unnamed>'}' (op {node.op_type})"
    if node.domain not in ("", "ai.onnx"):
        return f"{label} is in domain '{node.domain}': custom ops need a TensorRT plugin"
    if node.op_type not in SUPPORTED_OPS:
        return f"{label} is not supported by TensorRT's ONNX parser ({SOURCE})"
    if node.op_type in _SCATTER_OPS and _reduction(node) != "none":
        return f"{label} has reduction='{_reduction(node)}', which TensorRT's parser does not import natively"
    return None


def _opset_problem(model) -> str | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and not OPSET_RANGE[0] <= entry.version <= OPSET_RANGE[1]:
            return f"opset {entry.version} is outside {OPSET_RANGE[0]}..{OPSET_RANGE[1]}, the range of {SOURCE}"
    return None


def find_problems(model) -> list[str]:
    """Every reason TensorRT's parser would refuse `model` (an onnx.ModelProto); empty when none."""
    problems = [p for p in [_opset_problem(model)] if p]
    problems += [p for p in map(node_problem, _nodes(model.graph)) if p]
    return problems


def preflight(model_or_path) -> None:
    """Raise TensorRTPreflightError naming the first offending node (and how many more there are)."""
    import onnx

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    problems = find_problems(model)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise TensorRTPreflightError(f"TensorRT pre-flight failed: {problems[0]}{more}")
