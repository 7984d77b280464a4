"""cuda-graph-fused: the Inductor-compiled energies+forces+virials step on CPU (the same code path as on a GPU,
Inductor's C++ backend instead of Triton), and how the mode reaches the compile.  Capture, replay and
parity on a GPU are in test_cuda_graph.py (shared fixture)."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from deploycc.errors import UserInputError
from deploycc.model import StudentModel
from deploycc.runtime.neighbours import Structure, neighbour_batch
from deploycc.targets.base import GraphInputs
from deploycc.targets.cuda_graph import CudaGraphRunner, eager_step, pad_inputs
from deploycc.targets.cuda_graph_fused import FusedCudaGraphTarget, fused_step

from helpers import molecules, periodic_structures
from helpers import tiny_model as shared_tiny_model


def tiny_model(seed: int = 0) -> StudentModel:
    return shared_tiny_model(seed, ref_scale=100.0)


def inputs_of(structures) -> GraphInputs:
    return GraphInputs.from_batch(neighbour_batch(list(structures), tiny_model().cutoff))


@pytest.mark.slow
def test_fused_step_matches_eager_on_new_shapes_periodic_cells_and_padding() -> None:
    """One compile with symbolic atom and slot sizes serves every shape (none equal to the traced example's);
    results equal the eager model's, and padding atoms get exactly zero force."""
    from torch._dynamo.utils import counters

    model = tiny_model()
    counters.clear()
    fused, eager = fused_step(copy.deepcopy(model), "cpu"), eager_step(copy.deepcopy(model), "cpu")
    small = inputs_of(molecules([4, 7], seed=2))
    mixed = inputs_of(molecules([3, 6, 2], seed=3) + [Structure.from_atoms(periodic_structures()[0])])
    padded = pad_inputs(small, small.atoms + 5, small.slots + 4)
    assert len({(x.atoms, x.slots) for x in (small, mixed, padded)}) == 3
    for inputs in (small, mixed, padded):
        out = fused(*inputs.tensors())
        ref = eager(*inputs.tensors())
        assert len(out) == 3
        for got, want in zip(out, ref):
            assert got.shape == want.shape and got.dtype == want.dtype == torch.float32
        torch.testing.assert_close(out[0], ref[0], atol=1e-5, rtol=1e-6)  # energies
        torch.testing.assert_close(out[1], ref[1], atol=1e-4, rtol=1e-4)  # forces
        torch.testing.assert_close(out[2], ref[2], atol=1e-4, rtol=1e-4)  # virials
    a = small.atoms
    forces, virials = fused(*padded.tensors())[1:]
    assert (forces[a:] == 0).all() and (virials[a:] == 0).all()
    assert counters["stats"]["unique_graphs"] == 1  # one graph compiled, whatever the shapes


class CompileSpy:
    """Records torch.compile's arguments, then calls the real torch.compile (which compiles lazily)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.real = torch.compile

    def __call__(self, fn, **kwargs):
        self.calls.append(kwargs)
        return self.real(fn, **kwargs)


def test_the_mode_reaches_the_one_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = CompileSpy()
    monkeypatch.setattr(torch, "compile", spy)
    fused_step(tiny_model(), "cpu", "max-autotune-no-cudagraphs")
    fused_step(tiny_model(), "cpu")
    assert [call["mode"] for call in spy.calls] == ["max-autotune-no-cudagraphs", None]
    assert all(call["dynamic"] is True and call["fullgraph"] is True for call in spy.calls)


def test_runner_takes_the_inductor_mode_from_settings(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    target = FusedCudaGraphTarget()
    settings = replace(target.settings("cpu"), extra={**target.settings().extra,
                                                      "inductor_mode": "max-autotune-no-cudagraphs"})
    exported = target.export(tiny_model(), settings, tmp_path)
    assert exported.path.name == "model.pt"
    spy = CompileSpy()
    monkeypatch.setattr(torch, "compile", spy)
    runner = target.runner(exported.path, settings)
    assert isinstance(runner, CudaGraphRunner) and runner.label == "cuda-graph-fused"
    assert [call["mode"] for call in spy.calls] == ["max-autotune-no-cudagraphs"]
    bad = replace(settings, extra={**settings.extra, "inductor_mode": "reduce-overhead"})
    with pytest.raises(UserInputError, match="captures its own CUDA graphs"):
        target.runner(exported.path, bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_unavailable_without_gpu() -> None:
    target = FusedCudaGraphTarget()
    assert target.availability(target.settings()) == "needs a CUDA GPU"


def test_settings_are_its_own() -> None:
    settings = FusedCudaGraphTarget().settings()
    assert settings.target == "cuda-graph-fused" and settings.device == "cuda" and settings.precision == "fp32"


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_modes_with_their_own_cuda_graphs_are_refused(mode: str) -> None:
    """Inductor's own CUDA graphs cannot nest inside the runner's capture: a one-line user error."""
    with pytest.raises(UserInputError, match="captures its own CUDA graphs") as info:
        fused_step(tiny_model(), "cpu", mode)
    assert "\n" not in str(info.value)
