"""build(): atomic publish, cache, parity failure keeps the previous artifact, lock, tamper detection."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from deploycc.artifacts import build_lock, read_manifest, verify_hashes
from deploycc.checkpoint import save_checkpoint
from deploycc.errors import ArtifactError, MissingDependencyError, ParityError, UserInputError
from deploycc.pipeline import build
from deploycc.targets.base import Exported, register
from deploycc.targets.torchscript import TorchScriptTarget
from deploycc.verify import verify
from deploycc.versions import source_fingerprint

from conftest import make_model


class _DriftingTarget(TorchScriptTarget):
    """A real TorchScript export of a *different* model: parity must catch it."""

    name = "drifting-test"

    def export(self, model, settings, out_dir) -> Exported:
        with torch.no_grad():
            model.scale.mul_(1.01)
        return super().export(model, settings, out_dir)


class _CrashingTarget(TorchScriptTarget):
    name = "crashing-test"

    def export(self, model, settings, out_dir) -> Exported:
        (out_dir / self.artifact_file).write_bytes(b"half-written")
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-export


register(_DriftingTarget())
register(_CrashingTarget())


def test_build_writes_manifest_parity_and_reference(tiny_checkpoint, calib_file, tmp_path):
    result = build(str(tiny_checkpoint), "torchscript", tmp_path, calib=calib_file)
    folder = tmp_path / "tiny-test" / "torchscript"
    assert result.status == "built" and result.folder == folder
    manifest = read_manifest(folder)
    assert manifest["checkpoint"]["sha256"] == result.manifest["checkpoint"]["sha256"]
    assert manifest["parity"]["passed"] is True
    assert manifest["model_config"]["hidden_dim"] == 64
    assert "torch" in manifest["library_versions"]
    assert (folder / "reference.pt").is_file()
    assert json.loads((folder / "parity.json").read_text())["passed"] is True
    assert verify_hashes(folder, manifest).name == "model.ts"
    assert not list(folder.parent.glob(".torchscript.tmp-*"))


def test_unchanged_inputs_reuse_the_artifact_and_force_rebuilds(tiny_checkpoint, calib_file, tmp_path):
    first = build(str(tiny_checkpoint), "torchscript", tmp_path, calib=calib_file)
    again = build(str(tiny_checkpoint), "torchscript", tmp_path, calib=calib_file)
    assert again.status == "cached"
    assert again.manifest["built_at"] == first.manifest["built_at"]
    forced = build(str(tiny_checkpoint), "torchscript", tmp_path, calib=calib_file, force=True)
    assert forced.status == "built"


def test_changed_checkpoint_invalidates_the_cache(tmp_path, calib_file):
    ckpt = tmp_path / "m.pt"
    save_checkpoint(make_model(seed=1), ckpt, {})
    build(str(ckpt), "torchscript", tmp_path / "a", calib=calib_file)
    save_checkpoint(make_model(seed=2), ckpt, {})
    assert build(str(ckpt), "torchscript", tmp_path / "a", calib=calib_file).status == "built"


def test_changed_model_code_invalidates_the_cache(tiny_checkpoint, calib_file, tmp_path, monkeypatch):
    import deploycc.pipeline as pipeline

    first = build(str(tiny_checkpoint), "torchscript", tmp_path, calib=calib_file)
    assert first.manifest["library_versions"]["deploycc-source-sha256"] == source_fingerprint()
    monkeypatch.setattr(pipeline, "source_fingerprint", lambda: "0" * 64)  # as after editing deploycc/model
    assert build(str(tiny_checkpoint), "torchscript", tmp_path, calib=calib_file).status == "built"


def test_source_fingerprint_covers_the_model_code(tmp_path, monkeypatch):
    import shutil

    import deploycc.versions as versions

    copy = tmp_path / "deploycc"
    shutil.copytree(Path(versions.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__", "presets"))
    monkeypatch.setattr(versions, "__file__", str(copy / "versions.py"))
    before = versions.source_fingerprint()
    assert before == source_fingerprint()  # same files, same hash
    (copy / "model" / "layers.py").write_text((copy / "model" / "layers.py").read_text() + "\n# edit\n")
    edited = versions.source_fingerprint()
    assert edited != before
    (copy / "cli.py").write_text("# the CLI does not decide what an artifact computes\n")
    assert versions.source_fingerprint() == edited


def test_manifest_from_another_version_opens(tiny_checkpoint, calib_file, tmp_path):
    """An unknown tolerance key (renamed by another deploycc) is ignored; a missing one keeps the target file's."""
    from deploycc.pipeline import open_artifact
    from deploycc.targets.settings import load_settings

    result = build(str(tiny_checkpoint), "torchscript", tmp_path, calib=calib_file)
    manifest_path = result.folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    tolerances = manifest["settings"]["tolerances"]
    tolerances["stress_abs"] = tolerances.pop("virial_per_atom_abs")
    tolerances["forces_abs"] = 0.123
    manifest["settings"]["from_the_future"] = True
    manifest_path.write_text(json.dumps(manifest))
    runner, _manifest, settings = open_artifact(result.folder)
    assert settings.tolerances.forces_abs == 0.123  # the manifest's value
    assert settings.tolerances.virial_per_atom_abs == load_settings("torchscript").tolerances.virial_per_atom_abs
    assert runner.predict(torch.tensor([[6, 1]]), torch.tensor([[[0.0, 0, 0], [1.1, 0, 0]]]))[0].shape == (1,)


def test_parity_failure_raises_and_keeps_previous_artifact(tiny_checkpoint, calib_file, tmp_path):
    folder = tmp_path / "tiny-test" / "drifting-test"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"previous": true}')
    with pytest.raises(ParityError) as excinfo:
        build(str(tiny_checkpoint), "drifting-test", tmp_path, calib=calib_file)
    assert not excinfo.value.report.passed
    assert (folder / "manifest.json").read_text() == '{"previous": true}'
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json"]
    assert not list(folder.parent.glob(".drifting-test.tmp-*"))


def test_interrupted_build_leaves_previous_artifact_and_no_staging(tiny_checkpoint, calib_file, tmp_path):
    folder = tmp_path / "tiny-test" / "crashing-test"
    folder.mkdir(parents=True)
    (folder / "model.ts").write_bytes(b"previous artifact")
    with pytest.raises(KeyboardInterrupt):
        build(str(tiny_checkpoint), "crashing-test", tmp_path, calib=calib_file)
    assert (folder / "model.ts").read_bytes() == b"previous artifact"
    assert not list(folder.parent.glob(".crashing-test.tmp-*"))


def test_second_concurrent_build_is_refused(tmp_path):
    final = tmp_path / "m" / "onnx"
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with build_lock(final):
            entered.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    entered.wait(10)
    try:
        with pytest.raises(ArtifactError, match="another build"):
            with build_lock(final):
                pass
    finally:
        release.set()
        worker.join()


def test_tampered_artifact_is_refused_by_verify(tiny_checkpoint, calib_file, tmp_path):
    result = build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file)
    with open(result.artifact, "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        verify(result.folder, calib_file)


def test_verify_reports_parity_and_label_errors(tiny_checkpoint, calib_file, tmp_path):
    result = build(str(tiny_checkpoint), "torchscript", tmp_path, calib=calib_file)
    report = verify(result.folder, calib_file)
    assert report["parity"]["passed"] is True
    labels = report["vs_labels"]
    # Labels come from a different random model: the errors are real and equal for artifact and eager.
    assert labels["torchscript"]["force_rmse"] > 0.01
    assert labels["torchscript"]["force_rmse"] == pytest.approx(labels["eager"]["force_rmse"], rel=1e-4)


def test_folder_without_manifest_and_newer_manifest_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        read_manifest(tmp_path / "empty")
    (tmp_path / "newer").mkdir()
    (tmp_path / "newer" / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ArtifactError, match="upgrade deploycc"):
        read_manifest(tmp_path / "newer")


def test_unknown_target_and_unavailable_target(tiny_checkpoint, calib_file, tmp_path):
    with pytest.raises(UserInputError, match="unknown target 'nope'.*onnx"):
        build(str(tiny_checkpoint), "nope", tmp_path, calib=calib_file)
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: CUDA targets are available")
    with pytest.raises(MissingDependencyError, match="cuda-graph"):
        build(str(tiny_checkpoint), "cuda-graph", tmp_path, calib=calib_file)
