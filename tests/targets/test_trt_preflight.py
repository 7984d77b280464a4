"""TensorRT pre-flight on CPU: real fp32 and fp16-mixed exports pass; hand-made unsupported graphs fail."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from deploycc.errors import DeployccError
from deploycc.model import ModelConfig, StudentModel
from deploycc.targets.base import get_target
from deploycc.targets.trt_preflight import SUPPORTED_OPS, TensorRTPreflightError, find_problems, preflight

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
helper, TensorProto = onnx.helper, onnx.TensorProto

# Narrow layers: the same operators as the presets (two interactions: the first one, whose vector features
# are zero, and a later one with the vector-vector message), exported quickly.
MICRO = ModelConfig(hidden_dim=16, num_interactions=2, num_rbf=4)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from deploycc.targets.onnx_export import export_onnx
    from deploycc.targets.onnx_fp16 import export_mixed_onnx

    torch.manual_seed(0)
    model = StudentModel(MICRO).eval()
    folder = tmp_path_factory.mktemp("preflight")
    paths = {"fp32": folder / "fp32.onnx", "fp16": folder / "fp16.onnx"}
    export_onnx(model, get_target("onnx").settings(), paths["fp32"])
    # the graph the trt target builds its engine from (exported on the CPU, as the target does)
    export_mixed_onnx(model, replace(get_target("trt").settings(), device="cpu"), paths["fp16"])
    return paths


@pytest.mark.parametrize("kind", ["fp32", "fp16"])
def test_exports_pass(exports: dict[str, Path], kind: str) -> None:
    preflight(exports[kind])
    model = onnx.load(str(exports[kind]))
    nodes = model.graph.node
    ops = {node.op_type for node in nodes}
    assert ops <= SUPPORTED_OPS and {"Gather", "MatMul"} <= ops
    # The neighbour-slot formulation's adjoints are gathers along `reverse`: no scatter of any kind.
    assert not [node.op_type for node in nodes if node.op_type.startswith("Scatter")]
    assert all(node.domain in ("", "ai.onnx") for node in nodes)
    assert find_problems(model) == []


def _model(*nodes, inputs=("x",), extra_inputs=()) -> "onnx.ModelProto":
    values = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [4]) for name in inputs]
    values += list(extra_inputs)
    graph = helper.make_graph(list(nodes), "g", values, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_unsupported_op_is_named() -> None:
    model = _model(helper.make_node("Unique", ["x"], ["y"], name="dedupe_atoms"))
    with pytest.raises(TensorRTPreflightError, match=r"node 'dedupe_atoms' \(op Unique\)") as info:
        preflight(model)
    assert isinstance(info.value, DeployccError) and "\n" not in str(info.value)


def test_scatter_elements_add_is_refused() -> None:
    indices = helper.make_tensor_value_info("i", TensorProto.INT64, [4])
    node = helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], name="sum_forces", reduction="add")
    model = _model(node, inputs=("x", "u"), extra_inputs=[indices])
    with pytest.raises(TensorRTPreflightError, match=r"node 'sum_forces' \(op ScatterElements\).*reduction='add'"):
        preflight(model)


def test_scatter_nd_add_refused_and_none_accepted() -> None:
    indices = helper.make_tensor_value_info("i", TensorProto.INT64, [4, 1])
    add = helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="nd_add", reduction="add")
    plain = helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="nd_plain")
    assert "nd_add" in find_problems(_model(add, inputs=("x", "u"), extra_inputs=[indices]))[0]
    assert find_problems(_model(plain, inputs=("x", "u"), extra_inputs=[indices])) == []


def test_custom_domain_and_subgraph_nodes() -> None:
    custom = helper.make_node("FusedThing", ["x"], ["y"], name="fused", domain="com.microsoft")
    assert "domain 'com.microsoft'" in find_problems(_model(custom))[0]
    inner = helper.make_graph([helper.make_node("SplitToSequence", ["x"], ["s"], name="inner_split")], "then", [],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, None)])
    branch = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=inner, else_branch=inner)
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    problems = find_problems(_model(branch, extra_inputs=[cond]))
    assert len(problems) == 2 and all("inner_split" in p for p in problems)


def test_opset_outside_the_parsers_range_is_refused() -> None:
    model = _model(helper.make_node("Relu", ["x"], ["y"], name="relu"))
    assert find_problems(model) == []
    model.opset_import[0].version = 25
    with pytest.raises(TensorRTPreflightError, match="opset 25 is outside 9..24"):
        preflight(model)
