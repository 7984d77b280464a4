"""The TorchScript target: a frozen graph that keeps autograd.grad; one executor plan for every input shape (no
profiling, guards or fused kernels, so nothing recompiles as atom and slot counts change); results equal to
eager across sizes; calls of few atoms on one thread; the process's JIT flag and thread count left alone."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from deploycc.checkpoint import load_checkpoint
from deploycc.parity import FLOAT32_ULP
from deploycc.runtime.neighbours import neighbour_batch
from deploycc.targets.base import get_target
from deploycc.targets.eager import eager_runner
from deploycc.targets.torchscript import SERIAL_ATOMS, TorchScriptRunner

from helpers import molecules

# Nodes of a plan that specialises on its inputs (and recompiles, or falls back, when they change).
SPECIALISING = ("prim::TypeCheck", "prim::TensorExprGroup", "prim::TensorExprDynamicGroup", "prim::profile",
                "prim::DifferentiableGraph", "prim::RequiresGradCheck", "prim::FallbackGraph", "prim::BailOut",
                "prim::CallFunction", "prim::FusionGroup")
SIZES = [1, 2, 5, 9, 14, 23, 30, 41]


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    """(target, settings, artifact path, model): the tiny test model exported once."""
    target = get_target("torchscript")
    settings = target.settings()
    model = load_checkpoint(tiny_checkpoint).model
    path = target.export(copy.deepcopy(model), settings, tmp_path_factory.mktemp("torchscript")).path
    return target, settings, path, model


def batch_of(sizes: list[int], seed: int, cutoff: float):
    return neighbour_batch(molecules(sizes, seed=seed), cutoff)


def test_saved_graph_is_frozen_and_keeps_the_gradient(exported) -> None:
    _, _, path, model = exported
    module = torch.jit.load(str(path))
    graph = str(module.graph)
    assert "aten::grad" in graph  # forces are the gradient taken inside the graph
    assert "prim::GetAttr" not in graph  # frozen: weights are constants of the graph
    assert module.cutoff == pytest.approx(float(model.cutoff))


def test_one_plan_serves_every_shape(exported) -> None:
    """After a warm-up call, calls of other atom and slot counts run the very same plan, and that plan holds
    nothing that specialises on shapes (the default profiling executor's plan has guards and fallbacks)."""
    target, settings, path, model = exported
    runner = target.runner(path, settings)
    cutoff = float(model.cutoff)
    runner.infer(batch_of([7], 0, cutoff))
    plan = str(torch.jit.last_executed_optimized_graph())
    assert not [kind for kind in SPECIALISING if kind in plan]
    assert "aten::grad" in plan
    for k, n in enumerate(SIZES + [40, 40, 40, 40]):  # the last calls: more atoms than serial_atoms
        runner.infer(batch_of([n] if n != 40 else [40] * 4, k + 1, cutoff))
        assert str(torch.jit.last_executed_optimized_graph()) == plan, f"call {k} ({n} atoms) ran another plan"


def test_matches_eager_across_sizes(exported) -> None:
    target, settings, path, model = exported
    runner = target.runner(path, settings)
    reference = eager_runner(copy.deepcopy(model), "cpu")
    cutoff = float(model.cutoff)
    for sizes in [[n] for n in SIZES] + [SIZES]:
        batch = batch_of(sizes, 3, cutoff)
        got, want = runner.infer(batch), reference.infer(batch)
        atoms = np.diff(batch.offsets)
        np.testing.assert_allclose(got.energies / atoms, want.energies / atoms, rtol=2 * FLOAT32_ULP, atol=1e-5)
        np.testing.assert_allclose(got.forces, want.forces, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.virials / atoms[:, None, None], want.virials / atoms[:, None, None],
                                   rtol=0, atol=1e-5)
        assert got.forces.shape == (batch.atoms, 3)


@pytest.mark.parametrize("serial_atoms", [SERIAL_ATOMS, 0])
def test_small_calls_on_one_thread_and_process_settings_restored(exported, serial_atoms: int) -> None:
    target, settings, path, model = exported
    runner = target.runner(path, replace(settings, extra={**settings.extra, "serial_atoms": serial_atoms}))
    assert isinstance(runner, TorchScriptRunner) and runner.serial_atoms == serial_atoms
    module, seen = runner.call, []

    def recording(*tensors: torch.Tensor):
        seen.append((torch.get_num_threads(), torch._C._get_graph_executor_optimize()))
        return module(*tensors)

    runner.call = recording
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runner.infer(batch_of([5], 0, float(model.cutoff)))  # 5 atoms
        runner.infer(batch_of([30] * 6, 1, float(model.cutoff)))  # 180 atoms, above the default serial_atoms
        after = (torch.get_num_threads(), torch._C._get_graph_executor_optimize())
    finally:
        torch.set_num_threads(threads)
    assert seen == ([(1, False), (2, False)] if serial_atoms else [(2, False), (2, False)])
    assert after == (2, True)
