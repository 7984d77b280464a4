"""build(): export -> reload -> parity -> manifest; atomic publish, cache, parity failure keeps the previous
artifact, lock, calibration checks, symlinked folders, target settings and their override file."""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from deploycc.artifact.layout import build_lock
from deploycc.artifact.manifest import MANIFEST_VERSION, read_manifest
from deploycc.artifact.open import artifact_file, open_artifact
from deploycc.build import MIN_CALIBRATION_PAIRS, MIN_CALIBRATION_STRUCTURES, build, calibration_structures
from deploycc.checkpoint import load_checkpoint, save_checkpoint
from deploycc.data.schema import Structures, read_h5, write_h5
from deploycc.errors import ArtifactError, MissingDependencyError, ParityError, UserInputError
from deploycc.paths import default_calib_file
from deploycc.runtime.neighbours import Structure, neighbour_batch
from deploycc.targets.base import Exported, get_target, register
from deploycc.targets.eager import EagerTarget
from deploycc.targets.settings import MemoryModel
from deploycc.versions import source_fingerprint

from helpers import drifting_target, make_model, random_molecule


class _CrashingTarget(EagerTarget):
    name = "crashing-test"
    defaults = replace(EagerTarget.defaults, target="crashing-test")

    def export(self, model, settings, out_dir) -> Exported:
        (out_dir / self.artifact_file).write_bytes(b"half-written")
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-export


class _NanTarget(EagerTarget):
    """Exports a model whose outputs are NaN: parity fails and says so."""

    name = "nan-test"
    defaults = replace(EagerTarget.defaults, target="nan-test")

    def export(self, model, settings, out_dir) -> Exported:
        exported = super().export(model, settings, out_dir)
        checkpoint = torch.load(exported.path, weights_only=True)
        checkpoint["state_dict"]["scale"].fill_(float("nan"))
        torch.save(checkpoint, exported.path)
        return exported

    def runner(self, artifact, settings):
        from deploycc.model import StudentModel, preset_config
        from deploycc.targets.eager import eager_runner

        state = torch.load(artifact, weights_only=True)["state_dict"]
        model = StudentModel(preset_config("tiny"))
        model.load_state_dict(state)
        return eager_runner(model, "cpu")


drifting_target("drifting-test")
for _target in (_CrashingTarget, _NanTarget):
    register(_target)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_build_writes_manifest_parity_and_reference(tiny_checkpoint, calib_file, tmp_path):
    result = build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file)
    folder = tmp_path / "tiny-test" / "eager"
    assert result.status == "built" and result.folder == folder and result.artifact == folder / "model.pt"
    manifest = read_manifest(folder)
    assert manifest == result.manifest
    assert manifest.format_version == MANIFEST_VERSION == 2 and manifest.layout == "neighbour-slots"
    assert manifest.model == "tiny-test" and manifest.target == "eager" and manifest.device == "cpu"
    assert manifest.checkpoint.sha256 == load_checkpoint(tiny_checkpoint).sha256
    assert manifest.checkpoint.path == str(tiny_checkpoint) and manifest.checkpoint.copy == "reference.pt"
    assert manifest.parity_passed and manifest.parity["data"] == str(calib_file)
    assert manifest.parity["structures"] == 12 and manifest.parity["skipped_too_large"] == 0
    assert {c["name"] for c in manifest.parity["checks"]} == {"energy", "forces"}  # molecules only: no virial
    assert manifest.model_config["hidden_dim"] == 64 and manifest.model_config["periodic"] is False
    assert manifest.elements == [1, 6, 7, 8]  # nonzero element references of the random checkpoint
    assert manifest.checkpoint_metadata["teacher"] == "none"
    assert manifest.settings == get_target("eager").settings().to_dict()
    assert "torch" in manifest.library_versions
    assert manifest.library_versions["deploycc-source-sha256"] == source_fingerprint()
    assert (folder / "reference.pt").read_bytes() == tiny_checkpoint.read_bytes()
    assert json.loads((folder / "parity.json").read_text()) == json.loads(json.dumps(manifest.parity))
    assert artifact_file(folder, manifest) == folder / "model.pt"
    assert manifest.artifact.bytes == (folder / "model.pt").stat().st_size
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.pt", "parity.json", "reference.pt"]
    assert not list(folder.parent.glob(".eager.tmp-*")) and not list(folder.parent.glob(".eager.previous"))


def test_periodic_build_checks_virials_on_the_shipped_metal_set_by_default(periodic_checkpoint, tmp_path):
    result = build(str(periodic_checkpoint), "eager", tmp_path)
    assert result.parity["data"] == str(default_calib_file(periodic=True))
    assert result.parity["data"].endswith("metals.h5")
    assert {c["name"] for c in result.parity["checks"]} == {"energy", "forces", "virial"}
    assert result.parity["passed"] and result.manifest.model_config["periodic"] is True


def test_molecular_build_uses_the_shipped_molecules_by_default(tiny_checkpoint, tmp_path):
    result = build(str(tiny_checkpoint), "eager", tmp_path)
    assert result.parity["data"] == str(default_calib_file()) and result.parity["data"].endswith("molecules.h5")
    import deploycc

    assert Path(result.parity["data"]).parent == Path(deploycc.__file__).resolve().parent / "calib"
    assert result.parity["passed"]


def test_unchanged_inputs_reuse_the_artifact_and_force_rebuilds(tiny_checkpoint, calib_file, tmp_path):
    first = build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file)
    again = build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file)
    assert again.status == "cached"
    assert again.manifest.built_at == first.manifest.built_at and again.manifest == first.manifest
    forced = build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file, force=True)
    assert forced.status == "built"


def test_changed_checkpoint_or_calibration_invalidates_the_cache(tmp_path, calib_file):
    ckpt = tmp_path / "m.pt"
    save_checkpoint(make_model(seed=1), ckpt, {})
    build(str(ckpt), "eager", tmp_path / "a", calib=calib_file)
    save_checkpoint(make_model(seed=2), ckpt, {})
    assert build(str(ckpt), "eager", tmp_path / "a", calib=calib_file).status == "built"
    assert build(str(ckpt), "eager", tmp_path / "a", calib=calib_file).status == "cached"
    other = tmp_path / "calib2.h5"
    data = read_h5(calib_file)
    data.positions[0] = data.positions[0] + 0.01
    write_h5(data, other)
    assert build(str(ckpt), "eager", tmp_path / "a", calib=other).status == "built"


def test_changed_model_code_invalidates_the_cache(tiny_checkpoint, calib_file, tmp_path, monkeypatch):
    import deploycc.build as build_module

    build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file)
    monkeypatch.setattr(build_module, "source_fingerprint", lambda: "0" * 64)  # as after editing deploycc/model
    rebuilt = build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file)
    assert rebuilt.status == "built" and rebuilt.manifest.library_versions["deploycc-source-sha256"] == "0" * 64


def test_source_fingerprint_covers_the_code_that_decides_what_an_artifact_computes(tmp_path, monkeypatch):
    import deploycc.versions as versions

    copy = tmp_path / "deploycc"
    shutil.copytree(Path(versions.__file__).parent, copy,
                    ignore=shutil.ignore_patterns("__pycache__", "presets", "calib"))
    monkeypatch.setattr(versions, "__file__", str(copy / "versions.py"))
    before = versions.source_fingerprint()
    assert before == source_fingerprint()  # same files, same hash
    fingerprints = {before}
    for changed in ("model/layers.py", "targets/onnx.py", "runtime/neighbours.py", "checkpoint.py"):
        (copy / changed).write_text((copy / changed).read_text() + "\n# edit\n")
        fingerprints.add(versions.source_fingerprint())
    assert len(fingerprints) == 5  # each edit changed it
    edited = versions.source_fingerprint()
    for unrelated in ("cli/app.py", "runtime/predictor.py", "bench/driver.py"):  # not what an artifact computes
        (copy / unrelated).write_text("# the CLI does not decide what an artifact computes\n")
    assert versions.source_fingerprint() == edited


def test_manifest_from_another_version_opens(tiny_checkpoint, calib_file, tmp_path):
    """An unknown tolerance key (renamed by another deploycc) is ignored; a missing one keeps the target's."""
    result = build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file)
    manifest_path = result.folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    tolerances = manifest["settings"]["tolerances"]
    tolerances["stress_abs"] = tolerances.pop("virial_per_atom_abs")
    tolerances["forces_abs"] = 0.123
    manifest["settings"]["from_the_future"] = True
    manifest["settings"]["memory"]["per_gpu"] = 3
    manifest["something_new"] = {"x": 1}
    manifest_path.write_text(json.dumps(manifest))
    opened = open_artifact(result.folder)
    assert opened.settings.tolerances.forces_abs == 0.123  # the manifest's value
    installed = get_target("eager").settings().tolerances
    assert opened.settings.tolerances.virial_per_atom_abs == installed.virial_per_atom_abs
    structure = Structure.of([6, 1], [[0.0, 0, 0], [1.1, 0, 0]])
    prediction = opened.runner.infer(neighbour_batch([structure], 5.0))
    assert prediction.energies.shape == (1,) and np.isfinite(prediction.energies).all()


def test_parity_failure_raises_and_keeps_previous_artifact(tiny_checkpoint, calib_file, tmp_path):
    folder = tmp_path / "tiny-test" / "drifting-test"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"previous": true}')
    with pytest.raises(ParityError) as excinfo:
        build(str(tiny_checkpoint), "drifting-test", tmp_path, calib=calib_file)
    assert str(excinfo.value) == "drifting-test artifact failed parity against eager"
    report = excinfo.value.report
    assert not report.passed and {c.name: c.passed for c in report.checks}["energy"] is False
    assert (folder / "manifest.json").read_text() == '{"previous": true}'
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json"]
    assert not list(folder.parent.glob(".drifting-test.tmp-*"))


def test_nan_outputs_fail_parity_with_a_hint(tiny_checkpoint, calib_file, tmp_path):
    with pytest.raises(ParityError, match="failed parity against eager; its outputs hold NaN or infinite") as info:
        build(str(tiny_checkpoint), "nan-test", tmp_path, calib=calib_file)
    assert all(c.nan and not c.passed for c in info.value.report.checks)
    assert not (tmp_path / "tiny-test" / "nan-test").exists()


def test_interrupted_build_leaves_previous_artifact_and_no_staging(tiny_checkpoint, calib_file, tmp_path):
    folder = tmp_path / "tiny-test" / "crashing-test"
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"previous artifact")
    with pytest.raises(KeyboardInterrupt):
        build(str(tiny_checkpoint), "crashing-test", tmp_path, calib=calib_file)
    assert (folder / "model.pt").read_bytes() == b"previous artifact"
    assert not list(folder.parent.glob(".crashing-test.tmp-*"))


def test_second_concurrent_build_is_refused(tiny_checkpoint, calib_file, tmp_path):
    final = tmp_path / "tiny-test" / "eager"
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with build_lock(final):
            entered.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    assert entered.wait(10)
    try:
        with pytest.raises(ArtifactError, match=f"another build is writing {final} right now; wait for it to finish"):
            with build_lock(final):
                pass
        with pytest.raises(ArtifactError, match="another build is writing"):
            build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file)
    finally:
        release.set()
        worker.join()
    assert not final.exists()
    assert build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file).status == "built"  # lock released


def test_unknown_target_and_unavailable_target(tiny_checkpoint, calib_file, tmp_path):
    with pytest.raises(UserInputError, match="unknown target 'nope'.*onnx"):
        build(str(tiny_checkpoint), "nope", tmp_path, calib=calib_file)
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: CUDA targets are available")
    with pytest.raises(MissingDependencyError, match="target 'cuda-graph' cannot build here"):
        build(str(tiny_checkpoint), "cuda-graph", tmp_path, calib=calib_file)
    with pytest.raises(MissingDependencyError, match="target 'eager' cannot build here: no CUDA GPU"):
        build(str(tiny_checkpoint), "eager", tmp_path, device="cuda", calib=calib_file)
    assert not (tmp_path / "tiny-test").exists()


def test_an_artifact_path_that_is_a_file_is_refused(tiny_checkpoint, calib_file, tmp_path):
    (tmp_path / "tiny-test").mkdir()
    (tmp_path / "tiny-test" / "eager").write_text("not a folder")
    with pytest.raises(UserInputError, match="exists and is not a folder: choose another --out"):
        build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file)
    assert (tmp_path / "tiny-test" / "eager").read_text() == "not a folder"


# --- the calibration set -----------------------------------------------------------------------------------


def small_set(tmp_path: Path, sizes: list[int], spread: float = 1.0, name: str = "small.h5") -> Path:
    rng = np.random.default_rng(1)
    mols = [random_molecule(rng, n) for n in sizes]
    data = Structures(numbers=[m[0] for m in mols], positions=[m[1] * spread for m in mols])
    write_h5(data, tmp_path / name)
    return tmp_path / name


def test_a_calibration_set_too_small_to_test_anything_is_refused(tiny_checkpoint, tmp_path):
    few = small_set(tmp_path, [8, 9, 10], name="few.h5")  # 3 structures
    with pytest.raises(UserInputError) as info:
        build(str(tiny_checkpoint), "eager", tmp_path, calib=few)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{few}: 3 structures with ")
    assert f"is too small a calibration set (needs >= {MIN_CALIBRATION_STRUCTURES} structures and " \
           f">= {MIN_CALIBRATION_PAIRS} pairs)" in message
    sparse = small_set(tmp_path, [2, 2, 2, 2, 2], spread=3.5, name="sparse.h5")  # 5 structures, few pairs
    pairs = int(neighbour_batch([Structure.of(z, r) for z, r in zip(read_h5(sparse).numbers,
                                                                    read_h5(sparse).positions)], 5.0).degree.sum()) // 2
    assert pairs < MIN_CALIBRATION_PAIRS
    with pytest.raises(UserInputError, match=f"5 structures with {pairs} pairs within 5 Å is too small"):
        build(str(tiny_checkpoint), "eager", tmp_path, calib=sparse)
    enough = small_set(tmp_path, [5, 5, 5, 5], name="enough.h5")  # 4 structures, 40 pairs
    assert len(calibration_structures(enough, 5.0)) == 4
    assert build(str(tiny_checkpoint), "eager", tmp_path, calib=enough).parity["passed"]
    assert not any((tmp_path / "tiny-test").glob(".eager.tmp-*"))


def test_a_bad_calibration_structure_is_named_by_file_and_index(tiny_checkpoint, calib_file, tmp_path):
    import ase.io

    good = [Atoms(*random_molecule(np.random.default_rng(k), 6)) for k in range(5)]
    bad = Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]])
    path = tmp_path / "calib.extxyz"
    ase.io.write(path, good[:3] + [bad] + good[3:])
    with pytest.raises(UserInputError) as info:
        build(str(tiny_checkpoint), "eager", tmp_path, calib=path)
    assert str(info.value) == f"{path}: structure 3 (H2) has NaN or infinite positions"
    with pytest.raises(UserInputError, match="does not exist"):
        build(str(tiny_checkpoint), "eager", tmp_path, calib=tmp_path / "nope.h5")


# --- where artifacts go -------------------------------------------------------------------------------------


def test_build_through_a_symlinked_artifact_folder_builds_into_its_target(tiny_checkpoint, calib_file, tmp_path):
    real = tmp_path / "storage" / "tiny-eager"
    real.mkdir(parents=True)
    (real / "old.txt").write_text("the previous contents")
    link = tmp_path / "root" / "tiny-test" / "eager"
    link.parent.mkdir(parents=True)
    link.symlink_to(real, target_is_directory=True)
    result = build(str(tiny_checkpoint), "eager", tmp_path / "root", calib=calib_file)
    assert result.folder == real.resolve()
    assert link.is_symlink() and link.resolve() == real.resolve()  # the link is kept...
    assert (real / "manifest.json").is_file() and not (real / "old.txt").exists()  # ...and its target replaced
    assert read_manifest(link) == result.manifest
    assert sorted(p.name for p in link.parent.iterdir()) == ["eager"]  # no lock or staging beside the link
    assert build(str(tiny_checkpoint), "eager", tmp_path / "root", calib=calib_file).status == "cached"
    forced = build(str(tiny_checkpoint), "eager", tmp_path / "root", calib=calib_file, force=True)
    assert forced.status == "built" and link.is_symlink() and (real / "model.pt").is_file()
    assert not [p for p in real.parent.iterdir() if p.name.startswith(".tiny-eager.") and not p.name.endswith(".lock")]


def test_artifacts_go_under_deploycc_artifacts_by_default(tiny_checkpoint, calib_file, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYCC_ARTIFACTS", str(tmp_path / "elsewhere"))
    result = build(str(tiny_checkpoint), "eager", calib=calib_file)
    assert result.folder == tmp_path / "elsewhere" / "tiny-test" / "eager"


# --- target settings --------------------------------------------------------------------------------------------


def test_settings_come_from_the_target_and_its_override_file(tiny_checkpoint, calib_file, tmp_path, monkeypatch):
    defaults = get_target("eager").settings()
    assert defaults == EagerTarget.defaults and defaults.memory != MemoryModel()  # its own measured model
    assert get_target("eager").settings("cuda").device == "cuda"
    first = build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file)
    home = tmp_path / "home"
    (home / "targets").mkdir(parents=True)
    (home / "targets" / "eager.toml").write_text("[tolerances]\nforces_abs = 0.002\n\n[atoms]\nopt = 16\nmax = 20\n")
    monkeypatch.setenv("DEPLOYCC_HOME", str(home))
    settings = get_target("eager").settings()
    assert settings.tolerances.forces_abs == 0.002 and settings.atoms.max == 20
    assert settings.tolerances.energy_per_atom_abs == defaults.tolerances.energy_per_atom_abs  # merged key by key
    rebuilt = build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file)
    assert rebuilt.status == "built" and rebuilt.manifest.cache_key != first.manifest.cache_key
    assert rebuilt.manifest.settings["tolerances"]["forces_abs"] == 0.002
    assert rebuilt.parity["skipped_too_large"] == 4 and rebuilt.parity["structures"] == 8  # 23-30 atoms > 20
    assert "≤ 0.002 eV/Å" in {c["name"]: c["tolerance"] for c in rebuilt.parity["checks"]}["forces"]
    assert open_artifact(rebuilt.folder).settings.atoms.max == 20  # recorded in the manifest
    (home / "targets" / "eager.toml").write_text("opset = 'twenty'\n")
    with pytest.raises(UserInputError, match="eager.toml: bad setting"):
        build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file)
    (home / "targets" / "eager.toml").write_text("[tolerances\n")
    with pytest.raises(UserInputError, match="eager.toml: not valid TOML"):
        build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file)
    (home / "targets" / "eager.toml").write_text("colour = 'blue'\n")
    with pytest.raises(UserInputError, match=r"eager.toml: unknown setting\(s\) colour"):
        build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file)
    os.remove(home / "targets" / "eager.toml")
    assert get_target("eager").settings() == defaults
