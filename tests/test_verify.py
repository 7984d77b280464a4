"""verify(): the CI gate re-measures a built artifact with the installed target's tolerances, never trusting
what its manifest recorded; hashes, the reference checkpoint, errors against labels."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict

import ase.io
import numpy as np
import pytest
from ase import Atoms

from deploycc.build import build
from deploycc.checkpoint import save_checkpoint
from deploycc.errors import ArtifactError, UserInputError
from deploycc.targets.base import get_target
from deploycc.verify import tolerance_disagreements, verify

from helpers import make_model, random_molecule

ZERO = "[tolerances]\nenergy_per_atom_abs = 0.0\nforces_abs = 0.0\nforces_rel = 0.0\nvirial_per_atom_abs = 0.0\n"


@pytest.fixture(scope="module")
def built(tiny_checkpoint, calib_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("art")
    return {name: build(str(tiny_checkpoint), name, root, calib=calib_file).folder for name in ("eager", "onnx")}


@pytest.fixture
def onnx_copy(built, tmp_path):
    copy = tmp_path / "copy" / "onnx"
    shutil.copytree(built["onnx"], copy)
    return copy


def home_with(tmp_path, monkeypatch, name: str, text: str):
    home = tmp_path / "home"
    (home / "targets").mkdir(parents=True, exist_ok=True)
    (home / "targets" / f"{name}.toml").write_text(text)
    monkeypatch.setenv("DEPLOYCC_HOME", str(home))
    return home


def test_verify_reports_parity_and_label_errors(built, calib_file):
    report = verify(built["onnx"], calib_file)
    assert report["parity"]["passed"] is True and report["target"] == "onnx" and report["device"] == "cpu"
    assert report["artifact"] == str(built["onnx"]) and report["data"] == str(calib_file)
    assert report["tolerances"] == asdict(get_target("onnx").settings().tolerances)
    assert "manifest_disagrees" not in report
    labels = report["vs_labels"]
    # Labels come from a different random model: the errors are real and equal for artifact and eager.
    assert labels["onnx"]["force_rmse"] > 0.01 and labels["onnx"]["structures"] == 12
    assert labels["onnx"]["force_rmse"] == pytest.approx(labels["eager"]["force_rmse"], rel=1e-4)
    assert labels["onnx"]["energy_mae_per_atom"] == pytest.approx(labels["eager"]["energy_mae_per_atom"], rel=1e-3)
    forces = {c["name"]: c for c in report["parity"]["checks"]}["forces"]
    assert 0 < forces["max_abs"] < 1e-3  # the ONNX graph is not bit-identical to eager


def test_verify_uses_the_installed_tolerances_not_the_manifest(built, onnx_copy, calib_file, tmp_path, monkeypatch):
    manifest_path = onnx_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["settings"]["tolerances"]["forces_abs"] = 1e3  # a manifest that claims a loose tolerance
    manifest_path.write_text(json.dumps(manifest))
    report = verify(onnx_copy, calib_file)
    installed = get_target("onnx").settings().tolerances
    assert report["tolerances"]["forces_abs"] == installed.forces_abs == 5e-4
    assert report["manifest_disagrees"] == {"forces_abs": [1e3, installed.forces_abs]}
    assert "≤ 0.0005 eV/Å" in {c["name"]: c for c in report["parity"]["checks"]}["forces"]["tolerance"]

    home_with(tmp_path, monkeypatch, "onnx", ZERO)  # this installation now demands bit-identical results
    strict = verify(built["onnx"], calib_file)
    assert strict["parity"]["passed"] is False  # although the manifest says it passed
    assert json.loads((built["onnx"] / "manifest.json").read_text())["parity"]["passed"] is True
    assert set(strict["manifest_disagrees"]) == {"energy_per_atom_abs", "forces_abs", "forces_rel",
                                                 "virial_per_atom_abs"}
    assert strict["manifest_disagrees"]["forces_rel"] == [1e-4, 0.0]
    home_with(tmp_path, monkeypatch, "eager", ZERO)
    assert verify(built["eager"], calib_file)["parity"]["passed"] is True  # control: eager is bit-identical


def test_tolerance_disagreements():
    assert tolerance_disagreements({"a": 1, "b": 2}, {"a": 1, "b": 3}) == {"b": [2, 3]}
    assert tolerance_disagreements({}, {"a": 1}) == {"a": [None, 1]}
    assert tolerance_disagreements({"a": 1, "old": 5}, {"a": 1}) == {}


def test_tampered_artifact_is_refused(built, onnx_copy, calib_file):
    with open(onnx_copy / "model.onnx", "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ArtifactError, match=r"model.onnx does not match its manifest \(sha256 .* != .*\): it was "
                                            r"modified; rebuild with `deploycc build --force`"):
        verify(onnx_copy, calib_file)


def test_a_replaced_reference_checkpoint_is_refused(built, tmp_path, calib_file):
    copy = tmp_path / "copy" / "eager"
    shutil.copytree(built["eager"], copy)
    save_checkpoint(make_model(seed=5), copy / "reference.pt", {})
    with pytest.raises(ArtifactError, match=f"checkpoint {copy / 'reference.pt'} does not match the one {copy} was "
                                            "built from"):
        verify(copy, calib_file)


def test_verify_on_a_periodic_artifact_checks_virials_on_the_metal_set(periodic_checkpoint, periodic_calib_file,
                                                                       tmp_path):
    folder = build(str(periodic_checkpoint), "eager", tmp_path, calib=periodic_calib_file).folder
    report = verify(folder, unseen_elements="allow")  # the random model knows Al, Cu and Au, not Ag and co.
    assert report["data"].endswith("metals.h5")  # the shipped periodic set, by default
    assert report["parity"]["passed"] and "virial" in {c["name"] for c in report["parity"]["checks"]}
    assert report["vs_labels"]["eager"]["structures"] == 40


def test_unlabelled_data_gives_parity_only(built, tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "unlabelled.extxyz"
    ase.io.write(path, [Atoms(*random_molecule(rng, n)) for n in (4, 6, 8, 10, 12)])
    report = verify(built["eager"], path)
    assert report["parity"]["passed"] and report["parity"]["structures"] == 5 and "vs_labels" not in report


def test_structures_above_the_atoms_profile_are_skipped_and_counted(tiny_checkpoint, calib_file, tmp_path,
                                                                    monkeypatch):
    home_with(tmp_path, monkeypatch, "eager", "[atoms]\nopt = 16\nmax = 20\n")
    folder = build(str(tiny_checkpoint), "eager", tmp_path / "art", calib=calib_file).folder
    report = verify(folder, calib_file)
    assert report["parity"]["passed"] and report["parity"]["skipped_too_large"] == 4
    assert report["parity"]["structures"] == 8
    assert report["vs_labels"]["eager"]["structures"] == 8 and report["vs_labels"]["eager"]["skipped_too_large"] == 4


def test_data_that_cannot_be_checked_is_refused(built, tmp_path):
    rng = np.random.default_rng(5)
    few = tmp_path / "few.extxyz"
    ase.io.write(few, [Atoms(*random_molecule(rng, 6)) for _ in range(3)])
    with pytest.raises(UserInputError, match="3 structures with .* is too small a calibration set"):
        verify(built["eager"], few)
    with pytest.raises(UserInputError, match="unseen_elements must be one of"):
        verify(built["eager"], few, unseen_elements="sometimes")
    with pytest.raises(ArtifactError, match="does not exist; build it"):
        verify(tmp_path / "nothing-here")


def test_cli_gate_exits_1_and_reports_the_disagreement(built, onnx_copy, calib_file, tmp_path):
    home = tmp_path / "home"
    (home / "targets").mkdir(parents=True)
    (home / "targets" / "onnx.toml").write_text(ZERO)
    env = {**os.environ, "DEPLOYCC_HOME": str(home), "OMP_NUM_THREADS": "1"}
    report = tmp_path / "report.json"
    run = subprocess.run([sys.executable, "-m", "deploycc", "verify", str(onnx_copy), "--data", str(calib_file),
                          "--json", str(report)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert "Traceback" not in run.stdout + run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {onnx_copy} failed parity"]
    assert "note the manifest records forces_abs = 0.0005; this installation checks 0.0" in run.stdout
    assert "✗ forces" in run.stdout
    written = json.loads(report.read_text())
    assert written["parity"]["passed"] is False and written["manifest_disagrees"]["forces_abs"] == [5e-4, 0.0]


def test_an_artifact_that_takes_none_of_the_structures_is_refused_naming_the_file(built, calib_file, tmp_path):
    copy = tmp_path / "copy" / "eager"
    shutil.copytree(built["eager"], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["settings"]["atoms"] = {"min": 1, "opt": 1, "max": 1}  # as if built for single atoms
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match=rf"^{re.escape(str(calib_file))}: none of the 12 structures fits the "
                                             r"artifact's atoms profile \(at most 1 atom\)"):
        verify(copy, calib_file)


def test_labels_of_another_teacher_are_not_compared(built, calib_file, tmp_path):
    from deploycc.data.schema import read_h5, write_h5

    data = read_h5(calib_file)
    data.attrs = {**data.attrs, "teacher": "xtb"}
    relabelled = tmp_path / "xtb-labels.h5"
    write_h5(data, relabelled)
    checkpoint = tmp_path / "from-ani1x.pt"
    save_checkpoint(make_model(), checkpoint, {"teacher": "ani1x"})
    folder = build(str(checkpoint), "eager", tmp_path, calib=calib_file).folder
    report = verify(folder, relabelled)
    assert "vs_labels" not in report and report["parity"]["passed"]
    assert report["labels_not_compared"] == "the labels are xtb's; the checkpoint was distilled from ani1x"
    data.attrs["teacher"] = "ani1x"
    write_h5(data, relabelled)
    assert "vs_labels" in verify(folder, relabelled)  # the same teacher's labels are compared
