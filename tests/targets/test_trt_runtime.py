"""TensorRT engine build and run (needs TensorRT and an NVIDIA GPU; skipped elsewhere)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from deploycc.batching import pad
from deploycc.errors import ArtifactError
from deploycc.model import StudentModel, energy_and_forces
from deploycc.parity import check_parity
from deploycc.targets.settings import Profile, load_settings

from random_structures import molecules
from random_structures import tiny_model as shared_tiny_model


def tiny_model(seed: int = 0) -> StudentModel:
    return shared_tiny_model(seed, ref_scale=1000.0)


pytestmark = [pytest.mark.trt, pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]






@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    from deploycc.targets.trt import TrtTarget

    settings = replace(load_settings("trt"), batch=Profile(1, 4, 8), atoms=Profile(1, 16, 32),
                       extra={"workspace_gib": 2, "profiles": [{"batch": [1, 2, 2], "atoms": [33, 48, 64]}]})
    folder = Path(tmp_path_factory.mktemp("trt"))
    target = TrtTarget()
    assert target.availability(settings) is None
    exported = target.export(tiny_model(), settings, folder)
    return target, settings, exported


def test_build_writes_engine_cache_and_notes(built) -> None:
    _target, _settings, exported = built
    folder = exported.path.parent
    assert exported.path.name == "model.engine" and (folder / "timing.cache").stat().st_size > 0
    assert {"tensorrt", "gpu", "compute_capability"} <= set(exported.notes)
    assert len(exported.notes["profiles"]) == 2


def test_parity_chunks_and_padding(built) -> None:
    target, settings, exported = built
    runner = target.runner(exported.path, settings)
    model = tiny_model()
    numbers, positions = molecules([1, 2, 5, 9, 16, 23, 32, 40, 64, 3, 7, 12, 30, 4, 6, 8, 10, 11, 13])
    report = check_parity(lambda z, r: energy_and_forces(model, z, r), runner.predict, numbers, positions,
                          settings.tolerances, batch_size=16)  # 16 > batch max 8 (and 2 above 32 atoms)
    for check in report.checks:
        assert check.passed, check
    z, r = pad(*molecules([3, 5]), n_atoms=20)
    _energy, forces = runner.predict(z, r)
    assert forces.is_cuda and (forces[0, 3:] == 0).all() and (forces[1, 5:] == 0).all()


def test_engine_from_another_setup_is_refused(built, tmp_path: Path) -> None:
    target, settings, exported = built
    copy = tmp_path / "model.engine"
    copy.write_bytes(exported.path.read_bytes())
    info = json.loads((exported.path.parent / "engine.json").read_text())
    (tmp_path / "engine.json").write_text(json.dumps({**info, "tensorrt": "0.0.1"}))
    with pytest.raises(ArtifactError, match="TensorRT 0.0.1"):
        target.runner(copy, settings)
