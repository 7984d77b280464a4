"""cuda-graph and cuda-graph-fused targets: bucket arithmetic and availability on CPU; capture, replay and
parity on a GPU (both targets, through one parametrized fixture)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from deploycc.batching import pad
from deploycc.errors import UserInputError
from deploycc.model import StudentModel, energy_and_forces
from deploycc.parity import check_parity
from deploycc.targets.cuda_graph import CudaGraphTarget, atom_bucket, batch_bucket
from deploycc.targets.cuda_graph_fused import FusedCudaGraphTarget
from deploycc.targets.settings import Profile, load_settings

from random_structures import molecules
from random_structures import tiny_model as shared_tiny_model


def tiny_model(seed: int = 0) -> StudentModel:
    return shared_tiny_model(seed, ref_scale=100.0)


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_batch_buckets_are_powers_of_two_capped() -> None:
    assert [batch_bucket(b, 256) for b in (1, 2, 3, 5, 16, 17, 200, 256)] == [1, 2, 4, 8, 16, 32, 256, 256]
    assert batch_bucket(90, 100) == 100


def test_atom_buckets() -> None:
    assert [atom_bucket(n, 128) for n in (1, 8, 9, 30, 121, 128)] == [8, 8, 16, 32, 128, 128]
    assert [atom_bucket(n, 128, 0) for n in (1, 9, 33, 100)] == [8, 16, 64, 128]
    assert atom_bucket(7, 5) == 5


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_unavailable_without_gpu() -> None:
    assert CudaGraphTarget().availability(load_settings("cuda-graph")) == "needs a CUDA GPU"






@pytest.fixture(scope="module", params=[CudaGraphTarget, FusedCudaGraphTarget], ids=["eager-step", "fused-step"])
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """cuda-graph and cuda-graph-fused share the runner (buckets, capture, replay): one set of GPU tests."""
    target = request.param()
    settings = replace(load_settings(target.name), device="cuda", batch=Profile(1, 4, 4), atoms=Profile(1, 16, 40))
    exported = target.export(tiny_model(), settings, Path(tmp_path_factory.mktemp(target.name)))
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
def test_replays_new_inputs_chunks_and_pads(setup) -> None:
    runner, _settings = setup
    model = tiny_model()
    captured = []
    for seed in (2, 3):  # the same buckets twice, with different data
        z, r = pad(*molecules([6, 3, 9, 5, 4, 8, 2, 7, 1], seed=seed), n_atoms=12)  # 9 > batch max 4: 3 chunks
        energy, forces = runner.predict(z, r)
        e_ref, f_ref = energy_and_forces(model, z, r)
        assert energy.shape == (9,) and forces.shape == (9, 12, 3)
        torch.testing.assert_close(energy.cpu(), e_ref, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(forces.cpu(), f_ref, atol=1e-4, rtol=1e-4)
        assert (forces[0, 6:] == 0).all() and (forces[8, 1:] == 0).all()
        captured.append(len(runner.graphs))
    assert {(1, 16), (4, 16)} <= set(runner.graphs) and captured[0] == captured[1]  # replayed, not recaptured


@pytest.mark.gpu
@needs_gpu
def test_too_many_atoms_is_refused(setup) -> None:
    runner, _settings = setup
    z, r = pad(*molecules([41]))
    with pytest.raises(UserInputError, match="41 atoms"):
        runner.predict(z, r)


@pytest.mark.gpu
@needs_gpu
def test_stale_inputs_never_leak_between_requests_of_one_bucket(setup) -> None:
    """Requests of different shapes in one (4, 16) bucket, and repeats of one shape (which skip re-zeroing):
    every result equals the eager model's, so no atom of an earlier request survives in the padding."""
    runner, _settings = setup
    model = tiny_model()
    for k, (sizes, n_atoms) in enumerate([([12, 11, 9, 12], 12), ([10, 7, 10, 3], 10), ([9, 10, 8, 10], 10),
                                          ([12, 5, 6], 12), ([16, 2], 16), ([3, 4], 4)]):
        z, r = pad(*molecules(sizes, seed=10 + k), n_atoms=n_atoms)
        energy, forces = runner.predict(z, r)
        e_ref, f_ref = energy_and_forces(model, z, r)
        torch.testing.assert_close(energy.cpu(), e_ref, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(forces.cpu(), f_ref, atol=1e-4, rtol=1e-4)
