"""One contract, run against every registered target: export, reload, parity with eager, shapes, padding."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from deploycc.batching import pad
from deploycc.checkpoint import load_checkpoint
from deploycc.data.schema import read_h5
from deploycc.parity import check_parity
from deploycc.pipeline import resolve_settings
from deploycc.targets.base import registered
from deploycc.targets.eager import EagerRunner

TARGETS = sorted(registered())


@pytest.fixture(scope="module", params=TARGETS)
def built(request, tiny_checkpoint, tmp_path_factory):
    target = registered()[request.param]
    settings = resolve_settings(request.param, None)
    reason = target.availability(settings)
    if reason is not None:
        pytest.skip(f"{request.param} unavailable here: {reason}")
    model = load_checkpoint(tiny_checkpoint).model
    out_dir = tmp_path_factory.mktemp(request.param)
    exported = target.export(copy.deepcopy(model), settings, out_dir)
    return target, settings, exported, model


def test_export_writes_the_declared_artifact(built):
    target, _, exported, _ = built
    assert exported.path.name == target.artifact_file
    assert exported.path.is_file() and exported.path.stat().st_size > 0


def test_reloaded_artifact_matches_eager_within_tolerance(built, calib_file):
    target, settings, exported, model = built
    runner = target.runner(exported.path, settings)
    data = read_h5(calib_file)
    report = check_parity(EagerRunner(model, "cpu").predict, runner.predict, data.numbers, data.positions,
                          settings.tolerances, batch_size=5, max_atoms=settings.atoms.max)
    assert report.passed, report.to_dict()
    assert report.batches >= 4  # singles and padded batches were both exercised


def test_outputs_have_contract_shapes_and_zero_padded_forces(built, calib_file):
    target, settings, exported, _ = built
    runner = target.runner(exported.path, settings)
    data = read_h5(calib_file)
    numbers, positions = pad(data.numbers[:3], data.positions[:3], n_atoms=12)
    energy, forces = runner.predict(numbers, positions)
    assert tuple(energy.shape) == (3,)
    assert tuple(forces.shape) == (3, 12, 3)
    forces = forces.detach().float().cpu().numpy()
    assert np.isfinite(forces).all()
    for row, z in enumerate(data.numbers[:3]):
        assert np.abs(forces[row, len(z):]).max(initial=0.0) <= settings.tolerances.forces_abs


def test_runner_does_not_modify_its_inputs(built, calib_file):
    target, settings, exported, _ = built
    runner = target.runner(exported.path, settings)
    data = read_h5(calib_file)
    numbers, positions = pad(data.numbers[3:5], data.positions[3:5])
    before = positions.clone()
    runner.predict(numbers, positions)
    assert torch.equal(positions, before)
