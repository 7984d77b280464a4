"""onnx-fp16 on CPU: a random tiny model, exported once, against fp32 eager within the target's own tolerances;
the mixed model's float16 placement, and the graph's input/output and internal types."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from deploycc.model import StudentModel, energy_forces_virials
from deploycc.model.mixed import MixedStudentModel
from deploycc.parity import check_parity
from deploycc.runtime.neighbours import Structure, neighbour_batch
from deploycc.targets.base import GraphInputs, get_target
from deploycc.targets.cuda_graph import pad_inputs
from deploycc.targets.eager import eager_runner
from deploycc.targets.onnx_fp16 import FP16_TOLERANCES

from helpers import molecules, periodic_structures
from helpers import tiny_model as shared_tiny_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

FLOAT, FLOAT16, INT64 = 1, 10, 7  # onnx.TensorProto data types


def tiny_model(seed: int = 0) -> StudentModel:
    return shared_tiny_model(seed, ref_scale=1000.0, scale=1.7, shift=-0.3)


def settings():
    return get_target("onnx-fp16").settings()


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's onnx-fp16 file, exported once for this module."""
    from deploycc.targets.onnx_fp16 import export_mixed_onnx

    path = tmp_path_factory.mktemp("onnx-fp16") / "model.onnx"
    notes = export_mixed_onnx(tiny_model(), settings(), path)
    assert notes["precision"] == "fp16-mixed"
    return path


@pytest.fixture(scope="module")
def runner(onnx_path: Path):
    return get_target("onnx-fp16").runner(onnx_path, settings())


def test_settings_are_its_own() -> None:
    own = settings()
    assert own.target == "onnx-fp16" and own.precision == "fp16-mixed" and own.device == "cpu"
    assert own.tolerances == FP16_TOLERANCES
    assert own.tolerances.forces_abs > get_target("onnx").settings().tolerances.forces_abs  # looser than fp32


def test_mixed_model_runs_slot_work_fp16_and_atoms_fp32() -> None:
    model = tiny_model()
    mixed = MixedStudentModel.from_model(model)
    assert all(m.half_slots for m in mixed.messages) and not any(m.half_slots for m in model.messages)
    for name in ("element_ref", "scale", "shift", "rbf.centres"):
        assert mixed.get_buffer(name).dtype == torch.float32, name
    assert all(p.dtype == torch.float32 for p in mixed.parameters())
    seen: dict[str, list[torch.dtype]] = {"sums": []}
    real_bmm = torch.bmm

    def spy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        seen["sums"].append(a.dtype)
        return real_bmm(a, b)

    mixed.messages[0].register_forward_pre_hook(
        lambda m, args: seen.update(s=args[0].dtype, basis=args[2].dtype, directions=args[3].dtype))
    inputs = GraphInputs.from_batch(neighbour_batch(molecules([4, 7]), model.cutoff))
    for recompute in (False, True):  # training-style contractions, and the scatter-free inference ones
        mixed.set_recompute(recompute)
        seen["sums"].clear()
        torch.bmm = spy
        try:
            energies = mixed(*inputs.tensors())
        finally:
            torch.bmm = real_bmm
        assert energies.dtype == torch.float32
        assert seen["s"] == seen["basis"] == seen["directions"] == torch.float32  # fp32 per-atom state, basis
        assert seen["sums"] and set(seen["sums"]) == {torch.float16}  # every neighbour contraction is fp16
    energies, forces, virials = energy_forces_virials(mixed, *inputs.tensors())
    assert energies.dtype == forces.dtype == virials.dtype == torch.float32
    assert torch.isfinite(forces).all() and torch.isfinite(virials).all()
    _, reference_forces, _ = energy_forces_virials(model, *inputs.tensors())
    assert not torch.equal(forces, reference_forces)  # float16 really changes the arithmetic
    torch.testing.assert_close(forces, reference_forces, atol=FP16_TOLERANCES.forces_abs, rtol=0)


@pytest.mark.parametrize("kind", ["molecules", "periodic"])
def test_parity_with_fp32_eager(runner, kind: str) -> None:
    model = tiny_model()
    structures = (molecules([1, 2, 3, 5, 8, 12, 17, 23, 30]) if kind == "molecules"
                  else [Structure.from_atoms(a) for a in periodic_structures(seed=1)])
    report = check_parity(eager_runner(copy.deepcopy(model), "cpu"), runner, structures, settings().tolerances,
                          model.cutoff, batch_size=4)
    assert report.batches >= 5  # singles and padded batches
    assert [c.name for c in report.checks] == ["energy", "forces"] + (["virial"] if kind == "periodic" else [])
    for check in report.checks:
        assert check.passed, check


def test_padding_atoms_and_slots_get_exactly_zero_force(runner) -> None:
    model = tiny_model()
    inputs = GraphInputs.from_batch(neighbour_batch(molecules([3, 6]), model.cutoff))
    padded = pad_inputs(inputs, 11, inputs.slots + 4)
    energies, forces, virials = runner.infer_impl(padded)
    assert forces.dtype == energies.dtype == virials.dtype == torch.float32
    assert torch.isfinite(forces).all() and torch.isfinite(energies).all() and torch.isfinite(virials).all()
    assert (forces[9:] == 0).all() and (virials[9:] == 0).all()
    unpadded = runner.infer_impl(inputs)
    torch.testing.assert_close(forces[:9], unpadded[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(energies[:9], unpadded[0], atol=1e-5, rtol=2**-22)


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
    assert [v.name for v in model.graph.input] == ["numbers", "vectors", "neighbours", "reverse"]
    assert [v.name for v in model.graph.output] == ["energies", "forces", "virials"]
    assert {io[k].elem_type for k in ("numbers", "neighbours", "reverse")} == {INT64}
    assert {io[k].elem_type for k in ("vectors", "energies", "forces", "virials")} == {FLOAT}

    def dims(name: str) -> list:
        return [d.dim_param or d.dim_value for d in io[name].shape.dim]

    atoms, slots = dims("vectors")[:2]
    assert isinstance(atoms, str) and isinstance(slots, str) and atoms != slots  # both axes dynamic, distinct
    assert dims("vectors") == [atoms, slots, 3]
    assert dims("neighbours") == dims("reverse") == [atoms, slots] and dims("numbers") == [atoms]
    assert dims("energies") == [atoms] and dims("forces") == [atoms, 3] and dims("virials") == [atoms, 3, 3]
    types = _value_types(model)
    out = {(n.op_type, types.get(n.output[0])) for n in model.graph.node}
    assert ("MatMul", FLOAT16) in out
    for geometry_op in ("Sqrt", "Exp", "Cos"):  # distances, radial basis, cutoff envelope
        assert (geometry_op, FLOAT) in out and (geometry_op, FLOAT16) not in out
    cast_to_half = [n for n in model.graph.node if n.op_type == "Cast" and types.get(n.output[0]) == FLOAT16]
    assert cast_to_half  # the float32 -> float16 boundary is in the graph
    assert float(dict((p.key, p.value) for p in model.metadata_props)["cutoff"]) == tiny_model().cutoff


def test_fp16_artifact_differs_from_fp32(runner) -> None:
    """The fp16 artifact is not an fp32 graph under another name: its forces differ from the fp32 model's
    (within the fp16 tolerance)."""
    model = tiny_model()
    batch = neighbour_batch(molecules([9, 13], seed=8), model.cutoff)
    half, full = runner.infer(batch), eager_runner(copy.deepcopy(model), "cpu").infer(batch)
    assert not np.array_equal(half.forces, full.forces)
    np.testing.assert_allclose(half.forces, full.forces, rtol=0, atol=FP16_TOLERANCES.forces_abs)
