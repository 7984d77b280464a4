"""The typed manifest (deploycc/artifact/manifest.py) and the one way into an artifact (deploycc/artifact/open.py):
every field checked, one-line ArtifactErrors naming the file and the field, version gates, the artifact file
kept inside its folder, hashes, atomic strict JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from deploycc.artifact.layout import MANIFEST, json_safe, write_json
from deploycc.artifact.manifest import LAYOUT, MANIFEST_VERSION, Manifest, read_manifest
from deploycc.artifact.open import (artifact_file, is_artifact, manifest_summary, open_artifact,
                                    reference_checkpoint)
from deploycc.build import build
from deploycc.checkpoint import file_sha256, save_checkpoint
from deploycc.errors import ArtifactError, UserInputError

from helpers import make_model


@pytest.fixture(scope="module")
def artifact(tiny_checkpoint, calib_file, tmp_path_factory) -> Path:
    return build(str(tiny_checkpoint), "eager", tmp_path_factory.mktemp("art"), calib=calib_file).folder


@pytest.fixture
def copy(artifact, tmp_path) -> Path:
    """A private copy that a test may damage."""
    folder = tmp_path / "copy" / "eager"
    shutil.copytree(artifact, folder)
    return folder


def raw(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def rewrite(folder: Path, change) -> Path:
    manifest = raw(folder)
    change(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder / MANIFEST


def refused(folder: Path, *fragments: str) -> str:
    with pytest.raises(ArtifactError) as info:
        open_artifact(folder)
    message = str(info.value)
    assert "\n" not in message and info.value.exit_code == 65
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_round_trip(artifact):
    manifest = read_manifest(artifact)
    assert isinstance(manifest, Manifest)
    assert manifest.format_version == MANIFEST_VERSION == 2 and manifest.layout == LAYOUT == "neighbour-slots"
    assert Manifest.from_dict(manifest.to_dict(), "x") == manifest
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())), "x") == manifest
    assert raw(artifact) == json.loads(json.dumps(manifest.to_dict()))  # what is on disk is what is read
    assert manifest_summary(manifest) == {"model": "tiny-test", "target": "eager", "device": "cpu",
                                          "checkpoint_sha256": manifest.checkpoint.sha256, "parity_passed": True}
    assert is_artifact(artifact) and is_artifact(artifact / "model.pt") and not is_artifact(artifact.parent)


def test_open_artifact_checks_and_opens(artifact):
    opened = open_artifact(artifact / "model.pt")  # a file inside the folder names the folder
    assert opened.folder == artifact and opened.label == "tiny-test/eager" and opened.target.name == "eager"
    assert opened.settings.device == "cpu"
    assert open_artifact(artifact, extra={"threads": 2}).settings.extra["threads"] == 2
    checkpoint = reference_checkpoint(artifact, opened.manifest)
    assert checkpoint.path == artifact / "reference.pt" and checkpoint.sha256 == opened.manifest.checkpoint.sha256


def test_missing_folder_and_missing_manifest(tmp_path, copy):
    with pytest.raises(ArtifactError, match="artifact folder .*nowhere does not exist; build it with `deploycc build`"):
        read_manifest(tmp_path / "nowhere")
    (copy / MANIFEST).unlink()
    refused(copy, f"{copy} has no manifest.json: not a deploycc artifact (rebuild it with `deploycc build`)")


def test_newer_format_asks_for_an_upgrade(copy):
    path = rewrite(copy, lambda m: m.update(format_version=99))
    refused(copy, f"{path} has format_version 99; this deploycc reads up to 2: upgrade deploycc")


@pytest.mark.parametrize("change", [
    lambda m: m.update(format_version=1),
    lambda m: (m.update(format_version=1), m.pop("layout")),
    lambda m: m.update(layout="dense"),
], ids=["version-1", "version-1-without-layout", "dense-layout"])
def test_older_dense_manifests_are_refused_with_a_rebuild_hint(copy, change):
    path = rewrite(copy, change)
    refused(copy, f"{path} was built by an older deploycc (dense layout", "rebuild it with `deploycc build --force`")


def test_a_real_version_1_manifest_is_refused(copy):
    """The predecessor's manifest, as 0.1 wrote it: plain dicts, no layout."""
    old = {"format_version": 1, "model": "tiny", "target": "onnx", "device": "cpu",
           "checkpoint": {"path": "tiny.pt", "sha256": "ab" * 32},
           "artifact": {"file": "model.onnx", "sha256": "cd" * 32, "bytes": 100},
           "settings": {"batch": {"min": 1, "opt": 16, "max": 1024}}, "model_config": {}, "parity": {"passed": True}}
    (copy / MANIFEST).write_text(json.dumps(old))
    refused(copy, "format_version 1): rebuild it with `deploycc build --force`")


def test_invalid_json_and_non_objects(copy):
    (copy / MANIFEST).write_text("{not json")
    refused(copy, f"{copy / MANIFEST} is not valid JSON")
    (copy / MANIFEST).write_bytes(b"\xff\xfe\x00")
    refused(copy, "is not valid JSON")
    (copy / MANIFEST).write_text("[1, 2]")
    refused(copy, f"{copy / MANIFEST}: the manifest is a JSON list, not an object")


@pytest.mark.parametrize("change, fragment", [
    (lambda m: m.pop("model"), "lacks 'model': rebuild the artifact"),
    (lambda m: m.pop("format_version"), "lacks 'format_version'"),
    (lambda m: m["artifact"].pop("sha256"), "lacks 'artifact.sha256'"),
    (lambda m: m["checkpoint"].pop("path"), "lacks 'checkpoint.path'"),
    (lambda m: m.update(format_version="2"), "'format_version' must be a int, got str \"2\""),
    (lambda m: m.update(format_version=True), "'format_version' must be a int, got bool true"),
    (lambda m: m.update(format_version=2.0), "'format_version' must be a int, got float 2.0"),
    (lambda m: m["artifact"].update(bytes="12"), "'artifact.bytes' must be a int, got str"),
    (lambda m: m.update(artifact="model.pt"), "'artifact' must be a dict, got str"),
    (lambda m: m.update(settings=None), "'settings' must be a dict, got NoneType null"),
    (lambda m: m.update(target=7), "'target' must be a str, got int 7"),
    (lambda m: m.update(parity=[True]), "'parity' must be a dict, got list"),
    (lambda m: m.update(elements=[1, "C"]), "'elements' must be a list of atomic numbers or null"),
    (lambda m: m.update(elements=[True]), "'elements' must be a list of atomic numbers or null"),
    (lambda m: m.update(elements="HCNO"), "'elements' must be a list of atomic numbers or null"),
])
def test_every_field_is_checked(copy, change, fragment):
    path = rewrite(copy, change)
    message = refused(copy, fragment)
    assert message.startswith(str(path)), message


def test_unknown_target_in_a_manifest(copy):
    rewrite(copy, lambda m: m.update(target="tensorflow"))
    with pytest.raises(UserInputError, match="manifest.json: target 'tensorflow' is not one this deploycc knows"):
        open_artifact(copy)


@pytest.mark.parametrize("name", ["../model.pt", "/etc/passwd", "sub/model.pt", "", ".", "..", "manifest.json",
                                  "reference.pt", "parity.json"])
def test_the_artifact_file_must_stay_inside_its_folder(copy, tmp_path, name):
    (copy / "sub").mkdir()
    shutil.copy(copy / "model.pt", copy / "sub" / "model.pt")
    shutil.copy(copy / "model.pt", copy.parent / "model.pt")
    rewrite(copy, lambda m: m["artifact"].update(file=name, sha256=file_sha256(copy / "model.pt")))
    refused(copy, f"{copy / MANIFEST}: artifact.file '{name}' is not a file of the artifact folder")


def test_missing_and_modified_artifact_files(copy):
    manifest = read_manifest(copy)
    with open(copy / "model.pt", "ab") as handle:
        handle.write(b"x")
    message = refused(copy, f"{copy / 'model.pt'} does not match its manifest (sha256 ", "it was modified",
                      "rebuild with `deploycc build --force`")
    assert manifest.artifact.sha256[:12] in message
    (copy / "model.pt").unlink()
    refused(copy, f"artifact file {copy / 'model.pt'} is missing; rebuild with `deploycc build --force`")
    with pytest.raises(ArtifactError, match="is missing"):
        artifact_file(copy, manifest)


def test_a_file_that_passes_its_hash_but_cannot_be_loaded(copy):
    (copy / "model.pt").write_bytes(b"not a checkpoint at all")
    rewrite(copy, lambda m: m["artifact"].update(sha256=file_sha256(copy / "model.pt")))
    with pytest.raises(UserInputError) as info:
        open_artifact(copy)
    assert "\n" not in str(info.value) and "model.pt" in str(info.value)


def test_reference_checkpoint_falls_back_to_the_recorded_path_and_checks_its_hash(copy, tiny_checkpoint, tmp_path):
    manifest = read_manifest(copy)
    (copy / "reference.pt").unlink()
    assert reference_checkpoint(copy, manifest).path == Path(manifest.checkpoint.path) == tiny_checkpoint
    other = tmp_path / "other.pt"
    save_checkpoint(make_model(seed=3), other, {})
    moved = Manifest.from_dict({**manifest.to_dict(), "checkpoint": {**manifest.to_dict()["checkpoint"],
                                                                     "path": str(other)}}, "x")
    with pytest.raises(ArtifactError, match=f"checkpoint {other} does not match the one {copy} was built from"):
        reference_checkpoint(copy, moved)


def test_write_json_is_atomic_and_strict(tmp_path):
    path = tmp_path / "report.json"
    write_json(path, {"a": float("nan"), "b": [1.0, float("inf"), {"c": -float("inf")}], "d": "x", "e": Path("p")})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None, {"c": None}], "d": "x", "e": "p"}
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    assert json_safe((1.0, float("nan"))) == [1.0, None]
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("cannot be written")

    with pytest.raises(RuntimeError, match="cannot be written"):
        write_json(path, {"first": 1, "bad": Unprintable()})
    assert json.loads(path.read_text())["d"] == "x"  # a failed write leaves the previous file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
