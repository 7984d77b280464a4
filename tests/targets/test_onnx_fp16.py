"""onnx-fp16 on CPU: a random tiny model, exported once, against fp32 eager within targets/onnx-fp16.toml."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deploycc.batching import pad
from deploycc.model import StudentModel, energy_and_forces
from deploycc.model.mixed import MixedStudentModel
from deploycc.parity import check_parity
from deploycc.targets.settings import load_settings

from random_structures import molecules
from random_structures import tiny_model as shared_tiny_model


def tiny_model(seed: int = 0) -> StudentModel:
    return shared_tiny_model(seed, ref_scale=1000.0, scale=1.7, shift=-0.3)


pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

FLOAT, FLOAT16, INT64 = 1, 10, 7  # onnx.TensorProto data types








def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's onnx-fp16 file, exported once per test session (export takes ~20 s)."""
    path = tmp_path_factory.getbasetemp() / "onnx-fp16-tiny-seed0.onnx"
    if not path.is_file():
        from deploycc.targets.onnx_fp16 import export_mixed_onnx

        torch.set_num_threads(1)
        export_mixed_onnx(tiny_model(), load_settings("onnx-fp16"), path)
    return path


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported(tmp_path_factory)


@pytest.fixture(scope="module")
def runner(onnx_path: Path):
    from deploycc.targets.base import get_target

    settings = load_settings("onnx-fp16")
    return get_target("onnx-fp16").runner(onnx_path, settings)


def test_mixed_model_runs_pair_work_fp16_and_atoms_fp32() -> None:
    model = tiny_model()
    mixed = MixedStudentModel.from_model(model)
    assert all(m.half_pairs for m in mixed.messages) and not any(m.half_pairs for m in model.messages)
    seen: dict[str, list[torch.dtype]] = {"sums": []}
    real_bmm = torch.bmm

    def spy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        seen["sums"].append(a.dtype)
        return real_bmm(a, b)

    mixed.messages[0].register_forward_pre_hook(lambda m, args: seen.update(s=args[0].dtype, basis=args[2].dtype))
    for name in ("element_ref", "scale", "shift", "rbf.centres"):
        assert mixed.get_buffer(name).dtype == torch.float32, name
    z, r = pad(*molecules([4, 7]))
    torch.bmm = spy
    try:
        energy, forces = energy_and_forces(mixed, z, r)
    finally:
        torch.bmm = real_bmm
    assert energy.dtype == forces.dtype == torch.float32
    assert seen["s"] == seen["basis"] == torch.float32  # per-atom state and the K-wide basis stay fp32
    assert seen["sums"] and set(seen["sums"]) == {torch.float16}  # every neighbour sum runs on fp16 filters
    _, reference_forces = energy_and_forces(model, z, r)
    assert not torch.equal(forces, reference_forces)  # float16 really changes the arithmetic


def test_parity_with_fp32_eager(runner) -> None:
    tolerances = load_settings("onnx-fp16").tolerances
    model = tiny_model()
    numbers, positions = molecules([1, 2, 3, 5, 8, 12, 17, 23, 30])
    report = check_parity(lambda z, r: energy_and_forces(model, z, r), runner.predict, numbers, positions,
                          tolerances, batch_size=4)
    assert report.batches >= 5  # singles (batch 1) and padded batches
    for check in report.checks:
        assert check.passed, check


def test_padded_atoms_get_exactly_zero_force(runner) -> None:
    numbers, positions = molecules([3, 6])
    z, r = pad(numbers, positions, n_atoms=11)
    energy, forces = runner.predict(z, r)
    assert forces.dtype == energy.dtype == torch.float32
    assert torch.isfinite(forces).all() and torch.isfinite(energy).all()
    assert (forces[0, 3:] == 0).all() and (forces[1, 6:] == 0).all()


def _value_types(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def test_graph_io_is_fp32_and_network_is_fp16(onnx_path: Path) -> None:
    import onnx

    model = onnx.load(str(onnx_path))
    io = {v.name: v.type.tensor_type for v in [*model.graph.input, *model.graph.output]}
    assert io["numbers"].elem_type == INT64
    assert {io[k].elem_type for k in ("positions", "energy", "forces")} == {FLOAT}
    assert [d.dim_param for d in io["positions"].shape.dim[:2]] == ["batch", "atoms"]
    types = _value_types(model)
    out = {(n.op_type, types.get(n.output[0])) for n in model.graph.node}
    assert ("MatMul", FLOAT16) in out
    for geometry_op in ("Sqrt", "Exp", "Cos"):  # distances, radial basis, cutoff envelope
        assert (geometry_op, FLOAT) in out and (geometry_op, FLOAT16) not in out
    cast_to_half = [n for n in model.graph.node if n.op_type == "Cast" and types.get(n.output[0]) == FLOAT16]
    assert cast_to_half  # the float32 -> float16 boundary is in the graph
