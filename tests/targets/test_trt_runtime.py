"""TensorRT engine build and run (needs TensorRT and an NVIDIA GPU; skipped elsewhere): the engine, its files
and notes, the persistent timing cache reused by a second build, TF32 cleared on the builder config, parity
with the eager model on molecules and periodic structures across two optimization profiles, padding up to a
profile's minimum, misaligned inputs, and engines from another setup refused."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from deploycc.errors import ArtifactError, UserInputError
from deploycc.model import StudentModel
from deploycc.parity import check_parity
from deploycc.runtime.neighbours import Structure, neighbour_batch
from deploycc.targets.base import GraphInputs
from deploycc.targets.eager import eager_runner
from deploycc.targets.settings import Profile

from helpers import molecules, periodic_structures
from helpers import tiny_model as shared_tiny_model

pytestmark = [pytest.mark.trt, pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def tiny_model(seed: int = 0) -> StudentModel:
    return shared_tiny_model(seed, ref_scale=1000.0)


@pytest.fixture(scope="module")
def trt():
    tensorrt = pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    try:  # a broken install imports but cannot make a builder (no libnvinfer, no driver): skip with its reason
        builder = tensorrt.Builder(tensorrt.Logger(tensorrt.Logger.ERROR))
    except Exception as error:  # noqa: BLE001 - any failure here means TensorRT cannot run on this machine
        pytest.skip(f"TensorRT is installed but cannot start: {error}")
    if builder is None:
        pytest.skip("TensorRT is installed but cannot start: trt.Builder returned None")
    return tensorrt


@pytest.fixture(scope="module")
def settings(trt):
    from deploycc.targets.trt import TrtTarget

    # Profile 0: up to 64 atoms with up to 64 slots (molecules, periodic cells: ~44 slots).  Profile 1: 65 to
    # 256 atoms with 4 to 16 slots (many small molecules; requests with fewer slots are padded up to 4).
    return replace(TrtTarget().settings(), atoms=Profile(1, 16, 64), neighbours=Profile(1, 16, 64),
                   extra={"workspace_gib": 2, "profiles": [{"atoms": [65, 128, 256], "neighbours": [4, 8, 16]}]})


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """A fresh $DEPLOYCC_CACHE for this module: the first build finds no timing cache."""
    folder = Path(tmp_path_factory.mktemp("deploycc-cache"))
    patch = pytest.MonkeyPatch()
    patch.setenv("DEPLOYCC_CACHE", str(folder))
    yield folder
    patch.undo()


@pytest.fixture(scope="module")
def builds(trt, settings, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The same model built twice, in two folders (the second build finds the first one's timing cache)."""
    from deploycc.targets.trt import TrtTarget

    target = TrtTarget()
    assert target.availability(settings) is None
    first = target.export(tiny_model(), settings, Path(tmp_path_factory.mktemp("trt-first")))
    second = target.export(tiny_model(), settings, Path(tmp_path_factory.mktemp("trt-second")))
    return target, first, second


@pytest.fixture(scope="module")
def runner(builds, settings):
    target, first, _second = builds
    return target.runner(first.path, settings)


def test_build_writes_engine_info_onnx_and_notes(builds) -> None:
    _target, exported, _second = builds
    folder = exported.path.parent
    assert exported.path.name == "model.engine" and exported.path.stat().st_size > 0
    assert (folder / "model.onnx").is_file()  # the fp16-mixed graph it was built from
    info = json.loads((folder / "engine.json").read_text())
    assert set(info) == {"tensorrt", "gpu", "compute_capability"}
    assert {k: exported.notes[k] for k in info} == info
    assert exported.notes["strongly_typed"] is True and exported.notes["cleared_flags"] == ["TF32"]
    assert exported.notes["profiles"] == [{"atoms": [1, 16, 64], "neighbours": [1, 16, 64]},
                                          {"atoms": [65, 128, 256], "neighbours": [4, 8, 16]}]
    assert not (folder / "timing.cache").exists()  # the cache lives in the user's cache folder


def test_second_build_reuses_the_persistent_timing_cache(builds, cache_dir: Path) -> None:
    from deploycc.targets.trt import current_environment, timing_cache_file

    _target, first, second = builds
    path = timing_cache_file(current_environment("cuda"))
    assert path.parent == cache_dir / "trt" and path.is_file()
    notes1, notes2 = first.notes["timing_cache"], second.notes["timing_cache"]
    assert notes1["path"] == notes2["path"] == str(path)
    assert notes1["reused"] is False and notes1["loaded_bytes"] == 0 and notes1["saved_bytes"] > 0
    assert notes2["reused"] is True and notes2["loaded_bytes"] == notes1["saved_bytes"]
    assert path.stat().st_size == notes2["saved_bytes"]


def test_tf32_is_cleared_on_the_builder_config(trt, settings) -> None:
    from deploycc.targets.trt import CLEARED_FLAGS, _config, profiles

    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    config = _config(trt, builder, settings, b"")
    for name in CLEARED_FLAGS:
        assert not config.get_flag(getattr(trt.BuilderFlag, name)), name
    assert not config.get_flag(trt.BuilderFlag.TF32)
    assert config.num_optimization_profiles == len(profiles(settings)) == 2


def test_parity_with_eager_on_molecules_and_periodic_structures(runner, settings) -> None:
    model = tiny_model()
    structures = molecules([1, 2, 5, 9, 16, 23, 32, 40, 64, 3, 7, 12, 30, 4, 6, 8, 10, 11, 13])
    structures += [Structure.from_atoms(a) for a in periodic_structures()]
    report = check_parity(eager_runner(copy.deepcopy(model), "cpu"), runner, structures, settings.tolerances,
                          model.cutoff, batch_size=4, max_atoms=64)
    assert report.passed, report.to_dict()
    assert [c.name for c in report.checks] == ["energy", "forces", "virial"]
    assert report.batches >= 8


def test_second_profile_and_padding_to_its_minimum(runner, settings) -> None:
    """70 atoms of dimers (one slot each) exceed profile 0's atoms: profile 1 runs them, padded to its
    minimum of 4 slots; results equal the eager model's within the target's tolerances."""
    model = tiny_model()
    structures = molecules([2] * 35, seed=6)
    batch = neighbour_batch(structures, model.cutoff)
    assert batch.atoms == 70 and batch.slots < 4
    assert runner._pick(batch.atoms, batch.slots) == 1
    energies, forces, virials = runner.infer_impl(GraphInputs.from_batch(batch))
    assert forces.is_cuda and forces.shape == (70, 3) and energies.shape == (70,) and virials.shape == (70, 3, 3)
    out = runner.infer(batch)
    ref = eager_runner(copy.deepcopy(model), "cpu").infer(batch)
    tol = settings.tolerances
    np.testing.assert_allclose(out.energies / 2, ref.energies / 2, rtol=0,
                               atol=tol.energy_per_atom_abs + 4 * 2**-23 * np.abs(ref.energies).max() / 2)
    np.testing.assert_allclose(out.forces, ref.forces, rtol=0, atol=tol.forces_abs)


def test_misaligned_inputs_still_run(runner) -> None:
    """Inputs at addresses TensorRT refuses (views 4 and 8 bytes past an allocation) are copied to aligned
    buffers: the results equal those of the aligned inputs."""
    from deploycc.targets.trt import ALIGNMENT

    batch = neighbour_batch(molecules([7, 12], seed=9) + [Structure.from_atoms(periodic_structures()[0])],
                            tiny_model().cutoff)
    inputs = GraphInputs.from_batch(batch).to("cuda")

    def shifted(tensor: torch.Tensor) -> torch.Tensor:
        base = torch.empty(tensor.numel() + 8, dtype=tensor.dtype, device=tensor.device)
        view = base[1 : 1 + tensor.numel()].view(tensor.shape)
        view.copy_(tensor)
        assert view.data_ptr() % ALIGNMENT != 0
        return view

    misaligned = GraphInputs(*(shifted(t) for t in inputs.tensors()))
    expected = runner.infer_impl(inputs)
    got = runner.infer_impl(misaligned)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)  # the same engine on the same values
    assert torch.isfinite(got[1]).all()


def test_requests_beyond_every_profile_are_refused(runner) -> None:
    batch = neighbour_batch(molecules([1] * 300, seed=1), tiny_model().cutoff)
    with pytest.raises(UserInputError, match="300 atoms with 1 neighbour slots exceed every profile"):
        runner.infer(batch)


def test_engine_from_another_setup_is_refused(builds, settings, tmp_path: Path) -> None:
    target, exported, _second = builds
    copy_path = tmp_path / "model.engine"
    copy_path.write_bytes(exported.path.read_bytes())
    with pytest.raises(ArtifactError, match="missing"):
        target.runner(copy_path, settings)  # no engine.json beside it
    info = json.loads((exported.path.parent / "engine.json").read_text())
    (tmp_path / "engine.json").write_text(json.dumps({**info, "tensorrt": "0.0.1"}))
    with pytest.raises(ArtifactError, match="TensorRT 0.0.1"):
        target.runner(copy_path, settings)
