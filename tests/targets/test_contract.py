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


def export_for_test(name: str, checkpoint, tmp_path_factory):
    """(target, settings, exported or None when the target refuses this kind of model, model); skips when the
    target is unavailable here."""
    target = registered()[name]
    settings = resolve_settings(name, None)
    reason = target.availability(settings)
    if reason is not None:
        pytest.skip(f"{name} unavailable here: {reason}")
    model = load_checkpoint(checkpoint).model
    if model.periodic and not target.periodic:
        return target, settings, None, model
    out_dir = tmp_path_factory.mktemp(name)
    return target, settings, target.export(copy.deepcopy(model), settings, out_dir), model


@pytest.fixture(scope="module", params=TARGETS)
def built(request, tiny_checkpoint, tmp_path_factory):
    return export_for_test(request.param, tiny_checkpoint, tmp_path_factory)


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


@pytest.fixture(scope="module", params=TARGETS)
def built_periodic(request, periodic_checkpoint, tmp_path_factory):
    return export_for_test(request.param, periodic_checkpoint, tmp_path_factory)


def test_periodic_artifact_matches_eager_or_the_target_refuses_periodic_models(built_periodic, periodic_calib_file,
                                                                               tmp_path):
    from deploycc.errors import UnsupportedModelError
    from deploycc.pipeline import build

    target, settings, exported, model = built_periodic
    if exported is None:  # a molecules-only target must refuse at build time, never export a wrong graph
        with pytest.raises(UnsupportedModelError, match="periodic"):
            build(str(load_checkpoint_path(model, tmp_path)), target.name, tmp_path / "art", calib=periodic_calib_file)
        return
    runner = target.runner(exported.path, settings)
    assert runner.periodic
    data = read_h5(periodic_calib_file)
    report = check_parity(EagerRunner(model, "cpu").evaluate, runner.evaluate, data.numbers, data.positions,
                          settings.tolerances, batch_size=4, max_atoms=settings.atoms.max, cells=data.cells,
                          pbc=data.pbc)
    assert report.passed, report.to_dict()
    assert [c.name for c in report.checks] == ["energy", "forces", "virial", "padded forces"]  # the virial is exported


def test_molecular_artifact_refuses_periodic_structures(built):
    from deploycc.errors import UserInputError

    target, settings, exported, _ = built
    runner = target.runner(exported.path, settings)
    numbers, positions = pad([np.array([29, 29])], [np.array([[0.0, 0, 0], [1.8, 1.8, 0]])])
    with pytest.raises(UserInputError, match="without PBC support"):
        runner.predict(numbers, positions, torch.eye(3)[None] * 3.6, torch.ones(1, 3))


def load_checkpoint_path(model, folder):
    from deploycc.checkpoint import save_checkpoint

    path = folder / "periodic.pt"
    save_checkpoint(model, path, {"teacher": "none"})
    return path
