"""cuda-graph-fused: the Inductor-compiled energy+forces step on CPU (same code path as on a GPU, C++ backend
instead of Triton); capture, replay and parity on a GPU."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from deploycc.batching import pad
from deploycc.model import StudentModel, energy_and_forces
from deploycc.parity import check_parity
from deploycc.targets.cuda_graph import eager_step
from deploycc.targets.cuda_graph_fused import FusedCudaGraphTarget, fused_step
from deploycc.targets.settings import Profile, load_settings

from random_structures import molecules
from random_structures import tiny_model as shared_tiny_model


def tiny_model(seed: int = 0) -> StudentModel:
    return shared_tiny_model(seed, ref_scale=100.0)


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


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


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    settings = replace(load_settings("cuda-graph-fused"), device="cuda", batch=Profile(1, 4, 4),
                       atoms=Profile(1, 16, 40))
    target = FusedCudaGraphTarget()
    exported = target.export(tiny_model(), settings, Path(tmp_path_factory.mktemp("cuda-graph-fused")))
    return target.runner(exported.path, settings), settings


@pytest.mark.gpu
@needs_gpu
def test_parity_with_eager_cpu(setup) -> None:
    runner, settings = setup
    model = tiny_model()
    numbers, positions = molecules([1, 2, 5, 7, 9, 16, 17, 30, 40, 3, 11])
    report = check_parity(lambda z, r: energy_and_forces(model, z, r), runner.predict, numbers, positions,
                          settings.tolerances, batch_size=4)
    for check in report.checks:
        assert check.passed, check


@pytest.mark.gpu
@needs_gpu
def test_replays_without_recapture(setup) -> None:
    runner, _settings = setup
    model = tiny_model()
    captured = []
    for seed in (2, 3):
        z, r = pad(*molecules([6, 3, 9, 5, 4, 8, 2, 7, 1], seed=seed), n_atoms=12)
        energy, forces = runner.predict(z, r)
        e_ref, f_ref = energy_and_forces(model, z, r)
        torch.testing.assert_close(energy.cpu(), e_ref, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(forces.cpu(), f_ref, atol=1e-4, rtol=1e-4)
        captured.append(len(runner.graphs))
    assert captured[0] == captured[1]
