"""One contract, run against every registered target: export, reload from a moved folder, parity with the
eager reference on random molecules and on periodic structures (every model takes both: periodicity is a
property of the input), padding slots, shapes and dtypes, inputs left untouched, and scatter-free ONNX graphs.

Targets that cannot build or run here (no GPU, no TensorRT) skip with the target's own reason."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest

from deploycc.checkpoint import load_checkpoint
from deploycc.parity import FLOAT32_ULP, check_parity
from deploycc.runtime.neighbours import Structure, neighbour_batch
from deploycc.targets.base import GraphInputs, registered
from deploycc.targets.eager import eager_runner

from helpers import molecules, periodic_structures

# The package's own targets (other test modules register fakes of their own into the same registry).
TARGETS = sorted(n for n, t in registered().items() if type(t).__module__.startswith("deploycc.targets."))
MOLECULE_SIZES = [1, 2, 3, 5, 8, 11, 13, 17, 23, 30]
SCATTER_OPS = {"ScatterND", "ScatterElements", "Scatter"}


def export_for_test(name: str, checkpoint, tmp_path_factory):
    """(target, settings, exported, model): exported once per model and target, then the artifact folder is
    moved, so the runner opened on it depends on nothing but its files.  Skips when the target is
    unavailable here."""
    target = registered()[name]
    settings = target.settings()
    reason = target.availability(settings)
    if reason is not None:
        pytest.skip(f"{name} unavailable here: {reason}")
    model = load_checkpoint(checkpoint).model
    out_dir = tmp_path_factory.mktemp(f"{name}-export")
    exported = target.export(copy.deepcopy(model), settings, out_dir)
    moved = tmp_path_factory.mktemp(f"{name}-moved") / "artifact"
    shutil.copytree(out_dir, moved)
    shutil.rmtree(out_dir)
    exported.path = moved / exported.path.relative_to(out_dir)
    runner = target.runner(exported.path, settings)
    return target, settings, exported, model, runner


@pytest.fixture(scope="module", params=TARGETS)
def built(request, tiny_checkpoint, tmp_path_factory):
    """A molecular model (H/C/N/O references), exported by each target."""
    return export_for_test(request.param, tiny_checkpoint, tmp_path_factory)


@pytest.fixture(scope="module", params=TARGETS)
def built_periodic(request, periodic_checkpoint, tmp_path_factory):
    """A model trained on metals (config.periodic), exported by each target."""
    return export_for_test(request.param, periodic_checkpoint, tmp_path_factory)


def mixed_structures() -> list[Structure]:
    """Molecules and periodic cells, slabs and clusters together: atoms with 0 to ~45 neighbours."""
    return molecules([1, 4, 9, 14], seed=5) + [Structure.from_atoms(a) for a in periodic_structures(seed=2)]


def reference(model):
    return eager_runner(copy.deepcopy(model), "cpu")


def layout_tolerance(settings) -> tuple[float, float, float]:
    """How closely one artifact must reproduce itself when only the padding of the layout changes: energy
    (eV/atom), forces (eV/Å), virial (eV/atom).  1e-5 (float32 summation order) for fp32 artifacts and on
    the CPU (whose float16 kernels round the same values the same way whatever the width); float16 targets on
    a GPU may round contractions of another width differently: a tenth of their parity tolerances."""
    if settings.precision == "fp32" or settings.device == "cpu":
        return 1e-5, 1e-5, 1e-5
    t = settings.tolerances
    return 0.1 * t.energy_per_atom_abs, 0.1 * t.forces_abs, 0.1 * t.virial_per_atom_abs


def test_export_writes_the_declared_artifact(built) -> None:
    target, _settings, exported, _model, _runner = built
    assert exported.path.name == target.artifact_file
    assert exported.path.is_file() and exported.path.stat().st_size > 0
    assert isinstance(exported.notes, dict)


@pytest.mark.parametrize("kind", ["molecules", "periodic"])
def test_molecular_model_matches_eager_on_molecules_and_periodic_structures(built, kind: str) -> None:
    _target, settings, _exported, model, runner = built
    structures = (molecules(MOLECULE_SIZES) if kind == "molecules"
                  else [Structure.from_atoms(a) for a in periodic_structures()])
    report = check_parity(reference(model), runner, structures, settings.tolerances, model.cutoff,
                          batch_size=4, max_atoms=settings.atoms.max)
    assert report.passed, report.to_dict()
    assert report.structures == len(structures) and report.skipped_too_large == 0
    assert report.batches >= 4  # single structures and padded batches were both exercised
    expected = ["energy", "forces"] + (["virial"] if kind == "periodic" else [])
    assert [c.name for c in report.checks] == expected


@pytest.mark.parametrize("kind", ["molecules", "periodic"])
def test_periodic_model_matches_eager_on_molecules_and_periodic_structures(built_periodic, kind: str) -> None:
    _target, settings, _exported, model, runner = built_periodic
    assert model.config.periodic
    structures = (molecules(MOLECULE_SIZES, seed=3) if kind == "molecules"
                  else [Structure.from_atoms(a) for a in periodic_structures(seed=4)])
    report = check_parity(reference(model), runner, structures, settings.tolerances, model.cutoff,
                          batch_size=3, max_atoms=settings.atoms.max)
    assert report.passed, report.to_dict()
    assert report.batches >= 4
    expected = ["energy", "forces"] + (["virial"] if kind == "periodic" else [])
    assert [c.name for c in report.checks] == expected


def test_padding_slots_change_nothing(built) -> None:
    """Atoms with few neighbours in a batch whose slot width is set by a metal atom (~45 neighbours) get many
    padding slots: every structure's energy, forces and virial equal those of calling it alone (where it
    has fewer or no padding slots)."""
    _target, settings, _exported, model, runner = built
    e_atom, f_tol, w_tol = layout_tolerance(settings)
    structures = mixed_structures()
    batch = neighbour_batch(structures, model.cutoff)
    singles = [neighbour_batch([s], model.cutoff) for s in structures]
    assert batch.degree.min() < batch.slots  # padding slots exist in the batch ...
    assert min(single.slots for single in singles) < batch.slots // 2  # ... and many more than alone
    together = runner.infer(batch)
    for k, (structure, single) in enumerate(zip(structures, singles)):
        alone = runner.infer(single)
        n = len(structure)
        e_tol = e_atom * n + 4 * FLOAT32_ULP * abs(alone.energies[0])  # float32 rounding of the total
        assert abs(together.energies[k] - alone.energies[0]) <= e_tol, (k, together.energies[k], alone.energies[0])
        np.testing.assert_allclose(together.forces_of(k), alone.forces, rtol=0, atol=f_tol)
        np.testing.assert_allclose(together.virials[k] / n, alone.virials[0] / n, rtol=0, atol=w_tol)


def test_padding_atoms_and_slots_are_inert(built) -> None:
    """The layout grown by padding atoms (number 0) and extra padding slots per atom, as the CUDA-graph and
    TensorRT runners pad requests up to a bucket or profile minimum: real atoms are unchanged, padding atoms
    get exactly zero force and virial."""
    from deploycc.targets.cuda_graph import pad_inputs

    _target, settings, _exported, model, runner = built
    if not runner.slot_layout:
        pytest.skip(f"{_target.name} takes systems, not the padded slot layout")
    e_atom, f_tol, w_tol = layout_tolerance(settings)
    inputs = GraphInputs.from_batch(neighbour_batch(mixed_structures()[:6], model.cutoff))
    a = inputs.atoms
    energies, forces, virials = (t.detach().double().cpu() for t in runner.infer_impl(inputs))
    padded = pad_inputs(inputs, a + 7, inputs.slots + 5)
    p_energies, p_forces, p_virials = (t.detach().double().cpu() for t in runner.infer_impl(padded))
    assert tuple(p_forces.shape) == (a + 7, 3) and tuple(p_virials.shape) == (a + 7, 3, 3)
    assert (p_forces[a:] == 0).all() and (p_virials[a:] == 0).all()
    np.testing.assert_allclose(p_energies[:a].numpy(), energies.numpy(), rtol=2 * FLOAT32_ULP, atol=e_atom)
    np.testing.assert_allclose(p_forces[:a].numpy(), forces.numpy(), rtol=0, atol=f_tol)
    np.testing.assert_allclose(p_virials[:a].numpy(), virials.numpy(), rtol=0, atol=w_tol)


def test_outputs_have_contract_shapes_dtypes_and_are_finite(built) -> None:
    _target, _settings, _exported, model, runner = built
    structures = mixed_structures()
    batch = neighbour_batch(structures, model.cutoff)
    s, a = len(structures), batch.atoms
    prediction = runner.infer(batch)
    assert prediction.energies.shape == (s,) and prediction.forces.shape == (a, 3)
    assert prediction.virials.shape == (s, 3, 3)
    assert {prediction.energies.dtype, prediction.forces.dtype, prediction.virials.dtype} == {np.dtype(np.float64)}
    for values in (prediction.energies, prediction.forces, prediction.virials):
        assert np.isfinite(values).all()
    np.testing.assert_array_equal(prediction.offsets, batch.offsets)
    assert [len(prediction.forces_of(k)) for k in range(s)] == [len(x) for x in structures]
    if runner.slot_layout:
        energies, forces, virials = runner.infer_impl(GraphInputs.from_batch(batch))
        assert tuple(energies.shape) == (a,) and tuple(forces.shape) == (a, 3) and tuple(virials.shape) == (a, 3, 3)
        assert str(energies.device).startswith(runner.device.split(":")[0])
        # Per-structure sums of the per-atom outputs (in float64 on the host).
        np.testing.assert_allclose(prediction.energies, batch.per_structure(energies.detach().double().cpu().numpy()))
    # Net force on an isolated molecule vanishes (translation invariance), to float32 rounding.
    for k, structure in enumerate(structures):
        if not structure.periodic and len(structure) > 1:
            assert np.abs(prediction.forces_of(k).sum(0)).max() <= 1e-4


def test_runner_does_not_modify_its_inputs(built) -> None:
    _target, _settings, _exported, model, runner = built
    batch = neighbour_batch(mixed_structures()[2:6], model.cutoff)
    names = ("numbers", "positions", "neighbours", "reverse", "shifts", "offsets", "degree")
    arrays = {name: None if getattr(batch, name) is None else getattr(batch, name).copy() for name in names}
    inputs = GraphInputs.from_batch(batch)
    tensors = [t.clone() for t in inputs.tensors()]
    runner.infer(batch)
    if runner.slot_layout:
        runner.infer_impl(inputs)
    for name, before in arrays.items():
        if before is None:
            assert getattr(batch, name) is None, name
        else:
            np.testing.assert_array_equal(getattr(batch, name), before, err_msg=name)
    for after, before in zip(inputs.tensors(), tensors):
        assert after.dtype == before.dtype and bool((after == before).all())


def _op_types(graph) -> set[str]:
    """Op types of a graph and of every If/Loop/Scan subgraph in it."""
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                ops |= _op_types(attribute.g)
            for sub in attribute.graphs:
                ops |= _op_types(sub)
    return ops


def test_exported_onnx_graphs_have_no_scatter(built) -> None:
    """TensorRT has no scatter-add (and ONNX Runtime's raced): every ONNX graph a target writes must be
    scatter-free, its adjoints gathers along `reverse`."""
    target, _settings, exported, _model, _runner = built
    graphs = sorted(exported.path.parent.rglob("*.onnx"))
    if not graphs:
        pytest.skip(f"{target.name} writes no ONNX graph")
    onnx = pytest.importorskip("onnx")
    for path in graphs:
        ops = _op_types(onnx.load(str(path)).graph)
        assert {"Gather", "MatMul"} <= ops, (path.name, sorted(ops))  # a real graph of the model
        assert not ops & SCATTER_OPS, (path.name, sorted(ops & SCATTER_OPS))
