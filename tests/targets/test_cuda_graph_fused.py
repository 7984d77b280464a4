"""cuda-graph-fused: the Inductor-compiled energy+forces step on CPU (same code path as on a GPU, C++ backend
instead of Triton).  Capture, replay and parity on a GPU are in test_cuda_graph.py (shared fixture)."""

from __future__ import annotations

import pytest
import torch

from deploycc.batching import pad
from deploycc.model import StudentModel
from deploycc.targets.cuda_graph import eager_step
from deploycc.targets.cuda_graph_fused import FusedCudaGraphTarget, fused_step
from deploycc.targets.settings import load_settings

from random_structures import molecules
from random_structures import tiny_model as shared_tiny_model


def tiny_model(seed: int = 0) -> StudentModel:
    return shared_tiny_model(seed, ref_scale=100.0)


@pytest.mark.slow
def test_fused_step_matches_eager_on_new_shapes_and_padding() -> None:
    """One compile with symbolic sizes serves every shape; results equal the eager model's."""
    torch.manual_seed(0)
    model = tiny_model()
    fused, eager = fused_step(model, "cpu"), eager_step(model, "cpu")
    for sizes, n_atoms in (([4, 7], 9), ([3, 6, 2, 5, 1], 11)):
        z, r = pad(*molecules(sizes, seed=len(sizes)), n_atoms=n_atoms)
        energy, forces = fused(z, r)
        e_ref, f_ref = eager(z, r)
        assert energy.shape == e_ref.shape and forces.shape == f_ref.shape
        torch.testing.assert_close(energy, e_ref, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(forces, f_ref, atol=1e-4, rtol=1e-4)
        assert (forces[0, sizes[0]:] == 0).all()  # padded atoms: exactly zero force


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_unavailable_without_gpu() -> None:
    assert FusedCudaGraphTarget().availability(load_settings("cuda-graph-fused")) == "needs a CUDA GPU"


def test_settings_are_its_own() -> None:
    settings = load_settings("cuda-graph-fused")
    assert settings.target == "cuda-graph-fused" and settings.device == "cuda" and settings.precision == "fp32"


@pytest.mark.slow
def test_inductor_options_reach_the_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """`options` are applied to this compile: here Inductor's matmul decomposition (what
    scripts/count_kernels.py's decompose-* steps measure on a GPU) rewrites products, and results still match."""
    from torch._dynamo.utils import counters
    from torch._inductor.fx_passes import decompose_mem_bound_mm as pass_module

    monkeypatch.setattr(pass_module, "cpu_max_first_dimension_decomposition", 10**9)
    monkeypatch.setattr(pass_module, "cpu_max_other_dimension_decomposition", 512)
    counters.clear()
    model = tiny_model(1)
    options = {"post_grad_fusion_options": {"decompose_mm_pass": {"skip_dynamic_shape_dim_check": True}},
               "fx_graph_cache": False}
    fused, eager = fused_step(model, "cpu", options=options), eager_step(model, "cpu")
    z, r = pad(*molecules([5, 8, 3], seed=4), n_atoms=9)
    energy, forces = fused(z, r)
    e_ref, f_ref = eager(z, r)
    assert counters["inductor"]["decompose_mm"] > 0 and counters["inductor"]["decompose_bmm"] > 0
    torch.testing.assert_close(energy, e_ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(forces, f_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_modes_with_their_own_cuda_graphs_are_refused(mode: str) -> None:
    """Inductor's own CUDA graphs cannot nest inside the runner's capture: a one-line user error."""
    from deploycc.errors import UserInputError

    with pytest.raises(UserInputError, match="captures its own CUDA graphs"):
        fused_step(tiny_model(), "cpu", mode)
