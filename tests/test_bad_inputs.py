"""Bad inputs, one test per row of docs/bad-inputs.md: exact exit code, one line, no traceback, nothing half-written.

Rows run the command line's `deploycc.cli.main` in this process (so faults can be monkeypatched in, and so the
file stays fast): an uncaught exception would fail the test as a traceback would.  Rows marked `real process`
run `python -m deploycc` in a subprocess, end to end, and count every line on its stderr.  The crash-safety
kill tests are in tests/test_crash_safety.py.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

import deploycc.build as build_module
from deploycc.api import load
from deploycc.build import build
from deploycc.checkpoint import FORMAT_VERSION, save_checkpoint
from deploycc.errors import ArtifactError, UnseenElementWarning, UserInputError
from deploycc.model import PRESET_CONFIGS
from deploycc.runtime.predictor import NonFiniteResultError
from deploycc.targets.base import Exported, register
from deploycc.targets.eager import EagerTarget

from helpers import make_model, random_molecule

USER, MISSING, PARITY, STORAGE, INTERRUPTED = 65, 2, 1, 74, 130


# --- helpers -----------------------------------------------------------------------------------------------


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_one_line(code: int, stdout: str, stderr: str, expected_code: int, *fragments: str) -> str:
    assert code == expected_code, (code, stdout[-2000:], stderr[-2000:])
    assert "Traceback" not in stdout + stderr
    lines = stderr_lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def run_cli(*args, cwd=None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A real process: `python -m deploycc ARGS`."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "deploycc", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=300)


def assert_cli_error(result: subprocess.CompletedProcess, expected_code: int, *fragments: str) -> str:
    return assert_one_line(result.returncode, result.stdout, result.stderr, expected_code, *fragments)


def cli_error(result: tuple[int, str, str], expected_code: int, *fragments: str) -> str:
    return assert_one_line(*result, expected_code, *fragments)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under an artifact folder, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Staging folders or half-swapped backups beside an artifact folder."""
    return sorted(p.name for p in folder.parent.iterdir()
                  if p.name.startswith(f".{folder.name}.") and not p.name.endswith(".lock"))


@pytest.fixture(scope="module")
def artifact(tiny_checkpoint, calib_file, tmp_path_factory) -> Path:
    """An eager artifact of the random tiny checkpoint (trained elements: H C N O)."""
    return build(str(tiny_checkpoint), "eager", tmp_path_factory.mktemp("art"), calib=calib_file).folder


@pytest.fixture(scope="module")
def small_profile(tiny_checkpoint, calib_file, tmp_path_factory) -> Path:
    """An eager artifact built with `[atoms] max = 128` in $DEPLOYCC_HOME/targets/eager.toml."""
    home = tmp_path_factory.mktemp("home")
    (home / "targets").mkdir()
    (home / "targets" / "eager.toml").write_text("[atoms]\nopt = 64\nmax = 128\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEPLOYCC_HOME", str(home))
        return build(str(tiny_checkpoint), "eager", tmp_path_factory.mktemp("small"), calib=calib_file).folder


@pytest.fixture
def artifact_copy(artifact, tmp_path) -> Path:
    """A private copy of the artifact that a test may damage."""
    copy = tmp_path / "copy" / artifact.name
    shutil.copytree(artifact, copy)
    return copy


def h2(offset: float = 0.0) -> Atoms:
    return Atoms("H2", positions=[[offset, 0, 0], [offset + 0.74, 0, 0]])


def molecules(count: int, seed: int = 0, size: int = 6) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    return [Atoms(*random_molecule(rng, size)) for _ in range(count)]


# --- checkpoints -------------------------------------------------------------------------------------------


def test_b01_missing_checkpoint(tmp_path):  # real process
    assert_cli_error(run_cli("build", "--model", tmp_path / "missing.pt", "--target", "eager", cwd=tmp_path),
                     USER, "missing.pt", "no such model or checkpoint")


def test_b02_empty_checkpoint(cli, tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    cli_error(cli("build", "--model", "empty.pt", "--target", "eager", cwd=tmp_path), USER,
              "checkpoint empty.pt is empty")


def test_b03_truncated_checkpoint(cli, tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    cli_error(cli("build", "--model", "truncated.pt", "--target", "eager", cwd=tmp_path),
              USER, "truncated.pt", "corrupt or not a PyTorch file")


@pytest.mark.parametrize("seed", [0, 1])
def test_b04_random_bytes_checkpoint(cli, tmp_path, seed):
    (tmp_path / "noise.pt").write_bytes(random.Random(seed).randbytes(4096))
    cli_error(cli("build", "--model", "noise.pt", "--target", "eager", cwd=tmp_path), USER, "checkpoint noise.pt")


class _WritesMarker:
    """Unpickling this runs a shell command that creates a marker file: a stand-in for a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


@pytest.mark.parametrize("where", ["metadata", "whole-payload"])
def test_b05_pickled_code_is_refused_never_executed(tmp_path, where):  # real process
    marker = tmp_path / "code_ran"
    model = make_model()
    payload = {"format_version": FORMAT_VERSION, "model_config": model.config.to_dict(),
               "state_dict": model.state_dict(), "metadata": {"x": _WritesMarker(marker)}}
    torch.save(payload if where == "metadata" else _WritesMarker(marker), tmp_path / "evil.pt")
    result = run_cli("build", "--model", "evil.pt", "--target", "eager", cwd=tmp_path)
    assert_cli_error(result, USER, "evil.pt", "weights-only", "nothing in it was executed")
    assert not marker.exists()
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").rglob("manifest.json"))


def test_b06_wrong_architecture_for_its_weights(cli, tmp_path):
    tiny = make_model()
    torch.save({"format_version": FORMAT_VERSION, "model_config": PRESET_CONFIGS["original"].to_dict(),
                "state_dict": tiny.state_dict(), "metadata": {}}, tmp_path / "mismatch.pt")
    cli_error(cli("build", "--model", "mismatch.pt", "--target", "eager", cwd=tmp_path),
              USER, "mismatch.pt", "does not fit its architecture", "missing messages.2",
              "embedding.weight (101, 64) != (101, 128)")


def test_b07_model_prefixed_keys_load(tmp_path, calib_file):  # real process: stderr must be empty
    model = make_model(seed=3)
    torch.save({"model_state_dict": {"model." + k: v for k, v in model.state_dict().items()},
                "config": {"lr": 1e-3}}, tmp_path / "old_run.pt")
    result = run_cli("build", "--model", "old_run.pt", "--target", "eager", "--out", tmp_path / "out",
                     "--calib", calib_file, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and not stderr_lines(result.stderr)
    assert (tmp_path / "out" / "old_run" / "eager" / "manifest.json").is_file()


def test_b08_newer_checkpoint_format(cli, tmp_path):
    model = make_model()
    torch.save({"format_version": FORMAT_VERSION + 1, "model_config": model.config.to_dict(),
                "state_dict": model.state_dict(), "metadata": {}}, tmp_path / "future.pt")
    cli_error(cli("build", "--model", "future.pt", "--target", "eager", cwd=tmp_path), USER,
              f"checkpoint future.pt has format_version {FORMAT_VERSION + 1}; this deploycc reads up to "
              f"{FORMAT_VERSION}: upgrade deploycc")


def _schema_cases():
    model = make_model()
    good = {"format_version": FORMAT_VERSION, "model_config": model.config.to_dict(),
            "state_dict": dict(model.state_dict()), "metadata": {}}
    nan_state = {k: v.clone() for k, v in model.state_dict().items()}
    nan_state["scale"].fill_(float("nan"))
    return {
        "weights-not-a-dict": ({**good, "state_dict": [1, 2]}, "holds no weights (its state_dict is a list)"),
        "weight-not-a-tensor": ({**good, "state_dict": {**good["state_dict"], "scale": 2.0}},
                                "weight 'scale' is a float, not a tensor"),
        "nan-weight": ({**good, "state_dict": nan_state}, "weight 'scale' holds NaN or infinite values"),
        "string-version": ({**good, "format_version": "1"}, "format_version must be an integer, got '1'"),
        "config-not-a-dict": ({**good, "model_config": "tiny"}, "'model_config' must be a dict, got str"),
        "config-out-of-domain": ({**good, "model_config": {**good["model_config"], "cutoff": 50.0}},
                                 "model_config.cutoff = 50.0 is not a float in 0.5..20"),
        "config-wrong-type": ({**good, "model_config": {**good["model_config"], "hidden_dim": "64"}},
                              "model_config.hidden_dim = '64' is not a int in 2..4096"),
        "metadata-not-a-dict": ({**good, "metadata": ["x"]}, "'metadata' must be a dict, got list"),
        "elements-not-numbers": ({**good, "metadata": {"elements": ["H", "C"]}},
                                 "metadata.elements must be a list of atomic numbers 1..118"),
    }


SCHEMA_CASES = _schema_cases()


@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_b42_checkpoint_outside_its_schema(cli, tmp_path, case):
    content, fragment = SCHEMA_CASES[case]
    torch.save(content, tmp_path / "odd.pt")
    line = cli_error(cli("build", "--model", "odd.pt", "--target", "eager", cwd=tmp_path), USER,
                     "checkpoint odd.pt", fragment)
    assert not (tmp_path / "artifacts").exists(), line


# --- names -------------------------------------------------------------------------------------------------


def test_b09_unknown_preset(cli, tmp_path):
    cli_error(cli("build", "--model", "huge", "--target", "eager", cwd=tmp_path), USER,
              "no such model or checkpoint: 'huge' (presets: original, tiny, ultra-tiny, metals-tiny")


def test_b10_unknown_target(cli, tmp_path):
    cli_error(cli("build", "--model", "tiny", "--target", "tensorflow", cwd=tmp_path), USER,
              "unknown target 'tensorflow': choose one of eager,", "onnx", "or 'all'")


# --- artifacts ---------------------------------------------------------------------------------------------


def test_b11_artifact_folder_without_manifest(cli, artifact_copy, calib_file):
    (artifact_copy / "manifest.json").unlink()
    cli_error(cli("verify", artifact_copy, "--data", calib_file), USER,
              f"{artifact_copy} has no manifest.json: not a deploycc artifact")


def test_b12_artifact_modified_after_build(artifact_copy, calib_file):  # real process
    with open(artifact_copy / "model.pt", "ab") as handle:
        handle.write(b"tampered")
    assert_cli_error(run_cli("verify", artifact_copy, "--data", calib_file), USER, "model.pt",
                     "does not match its manifest", "--force")


def test_b13_manifest_from_a_newer_format(cli, artifact_copy, calib_file):
    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
    cli_error(cli("verify", artifact_copy, "--data", calib_file), USER, "manifest.json",
              "has format_version 99; this deploycc reads up to 2: upgrade deploycc")


def test_b43_manifest_of_the_dense_layout(cli, artifact_copy, calib_file):
    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    manifest["format_version"] = 1
    del manifest["layout"]
    (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
    cli_error(cli("verify", artifact_copy, "--data", calib_file), USER,
              "manifest.json was built by an older deploycc (dense layout, format_version 1): rebuild it with "
              "`deploycc build --force`")
    cli_error(cli("predict", artifact_copy, "--structures", calib_file, "--out", artifact_copy.parent / "o.extxyz"),
              USER, "rebuild it with `deploycc build --force`")


@pytest.mark.parametrize("name", ["../model.pt", "/etc/hostname", "reference.pt"])
def test_b44_artifact_file_outside_the_folder(cli, artifact_copy, calib_file, name):
    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    manifest["artifact"]["file"] = name
    (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(artifact_copy / "model.pt", artifact_copy.parent / "model.pt")
    cli_error(cli("verify", artifact_copy, "--data", calib_file), USER,
              f"artifact.file '{name}' is not a file of the artifact folder")


def test_b45_manifest_field_of_the_wrong_type(cli, artifact_copy, calib_file):
    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    manifest["artifact"]["bytes"] = "large"
    (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
    cli_error(cli("verify", artifact_copy, "--data", calib_file), USER,
              "manifest.json: 'artifact.bytes' must be a int, got str \"large\"")


def test_b23_engine_from_another_gpu_or_tensorrt(tmp_path):
    """The runtime refusal is tests/targets/test_trt_compat.py; here: the one-line, exit-65 error class."""
    from deploycc.targets.trt import check_engine_compatibility

    built = {"tensorrt": "10.3.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    with pytest.raises(ArtifactError) as info:
        check_engine_compatibility(built, {**built, "tensorrt": "10.4.0", "gpu": "NVIDIA A100-SXM4-80GB"})
    assert info.value.exit_code == USER
    assert "\n" not in str(info.value) and "rebuild" in str(info.value) and "10.3.0 != 10.4.0" in str(info.value)


# --- structures: the same refusal from the Python API and from `deploycc verify --data FILE` ---------------


def _bad_structures() -> dict[str, tuple[Atoms, str]]:
    close_images = Atoms("Cu2", positions=[[0.1, 1.0, 1.0], [3.45, 1.0, 1.0]], cell=[3.6, 3.6, 3.6], pbc=True)
    nan_cell = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 1.8]], pbc=True)
    nan_cell.cell.array[:] = [[np.nan, 0, 0], [0, 3.6, 0], [0, 0, 3.6]]
    flat_cell = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 1.8]], pbc=True)
    flat_cell.cell.array[:] = [[3.6, 0, 0], [7.2, 0, 0], [0, 0, 3.6]]
    return {
        "b14-z-zero": (Atoms(numbers=[1, 0], positions=[[0, 0, 0], [1, 0, 0]]),
                       "structure 1 (HX) has atomic number 0 outside 1..100"),
        "b15-z-above-max": (Atoms(numbers=[1, 110], positions=[[0, 0, 0], [1, 0, 0]]),
                            "has atomic number 110 outside 1..100"),
        "b17-nan-position": (Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]]),
                             "structure 1 (H2) has NaN or infinite positions"),
        "b17-inf-position": (Atoms("H2", positions=[[0, 0, 0], [0, np.inf, 0]]), "NaN or infinite positions"),
        "b18-coincident-atoms": (Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [0, 0, 0]]),
                                 "structure 1 (H2O) has atoms 0 and 2 0 Å apart, closer than the 0.5 Å "
                                 "tiny-test/eager accepts; remove the duplicate atom or fix the geometry"),
        "b18-too-close": (Atoms("CH", positions=[[0, 0, 0], [0.3, 0, 0]]),
                          "structure 1 (CH) has atoms 0 and 1 0.3 Å apart, closer than the 0.5 Å"),
        "b19-zero-atoms": (Atoms(), "structure 1 has no atoms"),
        "b33-nan-cell": (nan_cell, "structure 1 (Cu2) is periodic but its cell has NaN or infinite entries"),
        "b34-zero-volume": (flat_cell, "structure 1 (Cu2) is periodic but its cell has zero volume"),
        "b35-more-neighbours-than-the-profile": (
            Atoms("H", cell=[0.9, 0.9, 0.9], pbc=True),
            "structure 1 (H): atom 0 has 738 neighbours within 5 Å; tiny-test/eager holds at most 512 (its "
            "neighbours profile)"),
        "b62-coordinate-1e30": (Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [1e30, 0, 0]]),
                                "structure 1 (H2O) has a coordinate of 1e+30 Å, beyond the 1e+09 Å deploycc accepts"),
        "b62-span-above-1e5": (Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [2e6, 0, 0]]),
                               "structure 1 (H2O) spans 2e+06 Å, more than the 1e+05 Å deploycc accepts"),
        "b62-lattice-vector-above-1e5": (Atoms("Cu", cell=[2e5, 3.6, 3.6], pbc=True),
                                         "structure 1 (Cu) is periodic but has a lattice vector longer than"),
        "b46-periodic-images-too-close": (close_images, "structure 1 (Cu2) has atoms 0 and 1 (periodic images) "
                                                        "0.25 Å apart, closer than the 0.5 Å"),
    }


BAD_STRUCTURES = _bad_structures()


@pytest.mark.parametrize("name", list(BAD_STRUCTURES))
def test_bad_structure_through_the_api(name, artifact):
    atoms, fragment = BAD_STRUCTURES[name]
    predictor = load(artifact, unseen_elements="allow")
    calls: list[int] = []
    run = predictor.run
    predictor.run = lambda batch, *rest: calls.append(batch.atoms) or run(batch, *rest)
    with pytest.raises(UserInputError) as info:
        predictor.predict([h2(), atoms, h2(3.0)])
    message = str(info.value)
    assert "\n" not in message and fragment in message and message.startswith("structure 1"), message
    assert calls == []  # refused before anything ran


@pytest.mark.parametrize("name", list(BAD_STRUCTURES))
def test_bad_structure_through_verify(cli, name, artifact, tmp_path):
    atoms, fragment = BAD_STRUCTURES[name]
    data = tmp_path / "bad.extxyz"
    ase.io.write(data, [h2(), atoms] + molecules(4))
    cli_error(cli("verify", artifact, "--data", data, "--unseen-elements", "allow"), USER,
              f"error: {data}: structure 1", fragment)


def test_b14_bad_structure_through_verify_in_a_real_process(artifact, tmp_path):  # real process
    atoms, fragment = BAD_STRUCTURES["b14-z-zero"]
    data = tmp_path / "bad.extxyz"
    ase.io.write(data, [h2(), atoms])
    assert_cli_error(run_cli("verify", artifact, "--data", data), USER, f"error: {data}: {fragment}")


def test_b34_verify_names_the_file_index_of_a_degenerate_periodic_cell(cli, tmp_path, periodic_checkpoint,
                                                                       periodic_calib_file):
    folder = build(str(periodic_checkpoint), "eager", tmp_path / "art", calib=periodic_calib_file).folder
    good = [bulk("Cu", "fcc", a=3.61, cubic=True) for _ in range(5)]
    bad = bulk("Cu", "fcc", a=3.61, cubic=True)
    bad.cell[1] = bad.cell[0]  # collinear lattice vectors: zero volume
    path = tmp_path / "cells.extxyz"
    ase.io.write(path, good + [bad])
    cli_error(cli("verify", folder, "--data", path), USER, "structure 5 (Cu4)", "zero volume")


def test_b16_unseen_elements_api_warn_refuse_allow(artifact, tiny_checkpoint):
    hf = Atoms("HF", positions=[[0, 0, 0], [0.92, 0, 0]])
    for source in (artifact, tiny_checkpoint):  # manifest and checkpoint both know the training elements
        with pytest.warns(UnseenElementWarning, match=r"structure 0 \(HF\) contains F \(Z=9\), absent from"):
            load(source).predict([hf])
        with pytest.raises(UserInputError, match=r"F \(Z=9\)") as info:
            load(source, unseen_elements="refuse").predict([hf])
        assert "\n" not in str(info.value)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            energies, _ = load(source, unseen_elements="allow").predict([hf])
        assert np.isfinite(energies).all()
        with warnings.catch_warnings():  # trained elements only: no warning under the strictest policy
            warnings.simplefilter("error")
            load(source, unseen_elements="refuse").predict([h2()])
    with pytest.raises(UserInputError, match="unseen_elements must be one of warn, refuse, allow"):
        load(artifact, unseen_elements="sometimes")


@pytest.mark.parametrize("policy", ["warn", "refuse", "allow"])
def test_b16_unseen_elements_verify(policy, artifact, tmp_path):  # real process: every stderr line counts
    data = tmp_path / "hf.extxyz"
    ase.io.write(data, [h2(), Atoms("HF", positions=[[0, 0, 0], [0.92, 0, 0]])] + molecules(4))
    result = run_cli("verify", artifact, "--data", data, "--unseen-elements", policy)
    if policy == "refuse":
        assert_cli_error(result, USER, f"{data}: structure 1 (HF)", "F (Z=9)")
        return
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "verified" in result.stdout
    lines = stderr_lines(result.stderr)
    if policy == "warn":
        assert len(lines) == 1 and lines[0].startswith("warning: structure 1 (HF) contains F (Z=9)"), lines
    else:
        assert lines == []


def test_b16_elements_without_any_record_are_unknown_and_not_checked(tmp_path):
    model = make_model()
    with torch.no_grad():
        model.element_ref.zero_()  # nothing says which elements it saw
    save_checkpoint(model, tmp_path / "blank.pt", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(tmp_path / "blank.pt", unseen_elements="refuse").predict([Atoms("HF", positions=[[0, 0, 0], [1, 0, 0]])])


def test_b20_more_atoms_than_the_profile(small_profile):
    predictor = load(small_profile)
    assert predictor.settings.atoms.max == 128
    n = 129
    big = Atoms(numbers=[1] * n, positions=np.arange(3 * n).reshape(-1, 3) * 1.0)
    with pytest.raises(UserInputError, match=rf"^structure 0 \(H{n}\) has {n} atoms; tiny-test/eager takes at most "
                                             rf"128 per call \(its atoms profile\)$"):
        predictor.predict([big])


def test_b21_a_request_larger_than_the_profile_is_split(small_profile):
    predictor = load(small_profile)
    calls: list[int] = []
    inner = predictor.runner

    class Counting:
        def infer(self, batch):
            calls.append(batch.atoms)
            return inner.infer(batch)

    predictor.runner = Counting()
    rng = np.random.default_rng(0)
    atoms = [Atoms(numbers=z, positions=r) for z, r in (random_molecule(rng, 3) for _ in range(300))]
    energies, forces = predictor.predict(atoms)
    assert all(c <= 128 for c in calls) and sum(calls) == 900 and len(calls) == int(np.ceil(300 / 42))
    assert len(energies) == 300 and np.isfinite(energies).all()
    for k in (0, 150, 299):
        single_e, single_f = predictor.predict([atoms[k]])
        assert energies[k] == pytest.approx(single_e[0], abs=1e-4)
        np.testing.assert_allclose(forces[k], single_f[0], atol=1e-5)


def test_b47_a_structure_above_the_memory_budget(cli, artifact, tmp_path, monkeypatch):
    predictor = load(artifact, memory_budget=1e6)
    need = predictor.settings.memory.estimate(2, 1) / 1e9
    with pytest.raises(UserInputError) as info:
        predictor.predict([h2()])
    assert str(info.value).startswith(f"structure 0 (H2) (2 atoms, 1 neighbours per atom) needs an estimated {need:.3g} "
                                      "GB, above the 0.001 GB memory budget of tiny-test/eager")
    ase.io.write(tmp_path / "in.extxyz", molecules(3))
    monkeypatch.setenv("DEPLOYCC_MEMORY_BUDGET_GB", "0.001")
    cli_error(cli("predict", artifact, "--structures", tmp_path / "in.extxyz", "--out", tmp_path / "out.extxyz"),
              USER, "structure 0 (", "above the 0.001 GB memory budget of tiny-test/eager",
              "set DEPLOYCC_MEMORY_BUDGET_GB")
    assert not (tmp_path / "out.extxyz").exists()


def test_b48_a_budget_that_is_not_a_number(cli, artifact, tmp_path, monkeypatch):
    ase.io.write(tmp_path / "in.extxyz", molecules(2))
    monkeypatch.setenv("DEPLOYCC_MEMORY_BUDGET_GB", "lots")
    cli_error(cli("predict", artifact, "--structures", tmp_path / "in.extxyz", "--out", tmp_path / "out.extxyz"),
              USER, "DEPLOYCC_MEMORY_BUDGET_GB must be a number of GB, got 'lots'")


def test_b49_non_finite_results(cli, tmp_path):
    model = make_model()
    with torch.no_grad():
        model.scale.fill_(3e38)  # finite weights whose float32 energies overflow
    save_checkpoint(model, tmp_path / "overflow.pt", {})
    with pytest.raises(NonFiniteResultError, match=r"^structure 0 \(\w+\): overflow/eager gave NaN or infinite"):
        load(tmp_path / "overflow.pt").predict(molecules(1))
    ase.io.write(tmp_path / "in.extxyz", molecules(3))
    (tmp_path / "out.extxyz").write_text("previous\n")
    cli_error(cli("predict", tmp_path / "overflow.pt", "--structures", tmp_path / "in.extxyz", "--out",
                  tmp_path / "out.extxyz"), USER, "overflow/eager gave NaN or infinite energies or forces")
    assert (tmp_path / "out.extxyz").read_text() == "previous\n"
    assert not list(tmp_path.glob(".out.extxyz.tmp-*"))


def test_b50_a_calculator_used_by_a_second_thread(tiny_checkpoint):
    import threading

    from deploycc.ase import DeployccCalculator

    atoms = h2()
    atoms.calc = DeployccCalculator(tiny_checkpoint)
    atoms.get_potential_energy()
    caught: list[BaseException] = []

    def other() -> None:
        moved = h2(0.1)
        moved.calc = atoms.calc
        try:
            moved.get_potential_energy()
        except BaseException as exc:  # noqa: BLE001 - inspected below
            caught.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(60)
    assert len(caught) == 1 and isinstance(caught[0], UserInputError) and "\n" not in str(caught[0])
    assert "used by a second thread; give each thread its own calculator" in str(caught[0])


@pytest.mark.parametrize("out, fragment", [
    ("in.extxyz", "is the input file: write the predictions to another file"),
    ("folder.xyz", "is a folder; give a file name ending in .extxyz"),
    ("out.h5", "predictions are written as extended XYZ; name the file out.extxyz"),
])
def test_b51_predict_destination(cli, artifact, tmp_path, out, fragment):
    ase.io.write(tmp_path / "in.extxyz", molecules(2))
    (tmp_path / "folder.xyz").mkdir()
    before = (tmp_path / "in.extxyz").read_bytes()
    cli_error(cli("predict", artifact, "--structures", tmp_path / "in.extxyz", "--out", tmp_path / out), USER,
              f"--out {tmp_path / out}", fragment)
    assert (tmp_path / "in.extxyz").read_bytes() == before and (tmp_path / "folder.xyz").is_dir()


# --- environment -------------------------------------------------------------------------------------------


def test_b22_tensorrt_or_gpu_missing_exits_2(tmp_path):  # real process
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are present here")
    assert_cli_error(run_cli("build", "--model", "tiny", "--target", "trt", cwd=tmp_path), MISSING,
                     "target 'trt' cannot build here")


def test_b22_gpu_missing_for_a_cuda_target_exits_2(cli, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present here")
    cli_error(cli("build", "--model", "tiny", "--target", "onnx", "--device", "cuda", cwd=tmp_path), MISSING,
              "target 'onnx' cannot build here")
    cli_error(cli("build", "--model", "tiny", "--target", "eager", "--device", "cuda", cwd=tmp_path), MISSING,
              "target 'eager' cannot build here: no CUDA GPU visible to PyTorch")


# --- faults during a build ---------------------------------------------------------------------------------


def test_b24_disk_full_during_build(cli, monkeypatch, tiny_checkpoint, calib_file, tmp_path):
    previous = build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file).folder
    before = snapshot(previous)

    def full(path, payload):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(build_module, "write_json", full)
    result = cli("build", "--model", tiny_checkpoint, "--target", "eager", "--out", tmp_path, "--calib", calib_file,
                 "--force")
    cli_error(result, STORAGE, "no space left on the device while writing", "parity.json",
              f"the previous artifact in {previous} is unchanged")
    assert snapshot(previous) == before
    assert leftovers(previous) == []


def test_b24_unwritable_during_build(cli, monkeypatch, tiny_checkpoint, calib_file, tmp_path):
    def read_only(path, payload):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(build_module, "write_json", read_only)
    cli_error(cli("build", "--model", tiny_checkpoint, "--target", "eager", "--out", tmp_path, "--calib", calib_file),
              STORAGE, "cannot write", "Read-only file system", "build into a writable folder (--out)")
    assert not (tmp_path / "tiny-test" / "eager").exists() and leftovers(tmp_path / "tiny-test" / "eager") == []


class _InterruptedTarget(EagerTarget):
    """A real eager export that is interrupted (Ctrl-C) after writing half its artifact."""

    name = "interrupted-bad-inputs-test"
    defaults = replace(EagerTarget.defaults, target="interrupted-bad-inputs-test")

    def export(self, model, settings, out_dir) -> Exported:
        exported = super().export(model, settings, out_dir)
        exported.path.write_bytes(exported.path.read_bytes()[:100])
        raise KeyboardInterrupt


register(_InterruptedTarget)


def test_b25_ctrl_c_during_build(cli, tiny_checkpoint, calib_file, tmp_path):
    good = build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file).folder
    previous = good.parent / _InterruptedTarget.name
    shutil.copytree(good, previous)  # a previous artifact in the interrupted target's folder
    before = snapshot(previous)
    result = cli("build", "--model", tiny_checkpoint, "--target", _InterruptedTarget.name, "--out", tmp_path,
                 "--calib", calib_file, "--force")
    cli_error(result, INTERRUPTED, f"interrupted while building {_InterruptedTarget.name}; the previous artifact "
                                   "(if any) is unchanged")
    assert snapshot(previous) == before
    assert leftovers(previous) == []


def test_b26_two_builds_into_the_same_folder(tiny_checkpoint, calib_file, tmp_path):  # real process
    final = tmp_path / "tiny-test" / "eager"
    final.parent.mkdir(parents=True)
    with open(final.parent / ".eager.lock", "w") as handle:  # another build holds the folder's lock
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_cli("build", "--model", tiny_checkpoint, "--target", "eager", "--out", tmp_path,
                         "--calib", calib_file)
    assert_cli_error(result, USER, f"another build is writing {final} right now; wait for it to finish")
    assert not final.exists() and leftovers(final) == []


# --- more bad arguments ------------------------------------------------------------------------------------


def test_b27_unreadable_structure_file(cli, artifact, tmp_path):
    (tmp_path / "junk.xyz").write_text("this is not\nan xyz file\n")
    cli_error(cli("verify", artifact, "--data", tmp_path / "junk.xyz"), USER,
              f"cannot read {tmp_path / 'junk.xyz'} with ASE (")


def test_b28_missing_calibration_file(cli, tiny_checkpoint, tmp_path):
    cli_error(cli("build", "--model", tiny_checkpoint, "--target", "eager", "--out", tmp_path,
                  "--calib", tmp_path / "nope.h5"), USER, f"structure file {tmp_path / 'nope.h5'} does not exist")


def test_b29_bad_unseen_elements_value(cli, artifact, calib_file):
    cli_error(cli("verify", artifact, "--data", calib_file, "--unseen-elements", "sometimes"), USER,
              "unseen_elements must be one of warn, refuse, allow, got 'sometimes'")


def test_b52_calibration_set_too_small(cli, tiny_checkpoint, tmp_path):
    path = tmp_path / "three.extxyz"
    ase.io.write(path, molecules(3))
    cli_error(cli("build", "--model", tiny_checkpoint, "--target", "eager", "--out", tmp_path, "--calib", path), USER,
              f"{path}: 3 structures with", "is too small a calibration set (needs >= 4 structures and >= 20 pairs)")
    assert not (tmp_path / "tiny-test" / "eager").exists()


def test_b53_bad_structure_in_the_calibration_file(cli, tiny_checkpoint, tmp_path):
    path = tmp_path / "calib.extxyz"
    ase.io.write(path, molecules(3) + [Atoms("CC", positions=[[0, 0, 0], [0.2, 0, 0]])] + molecules(2, seed=1))
    cli_error(cli("build", "--model", tiny_checkpoint, "--target", "eager", "--out", tmp_path, "--calib", path), USER,
              f"{path}: structure 3 (C2) has atoms 0 and 1 0.2 Å apart, closer than the 0.5 Å tiny-test/eager "
              "accepts")


def test_b54_build_through_a_symlinked_artifact_folder(cli, tiny_checkpoint, calib_file, tmp_path):
    real = tmp_path / "disk" / "eager"
    real.mkdir(parents=True)
    (tmp_path / "out" / "tiny-test").mkdir(parents=True)
    (tmp_path / "out" / "tiny-test" / "eager").symlink_to(real)
    code, out, err = cli("build", "--model", tiny_checkpoint, "--target", "eager", "--out", tmp_path / "out",
                         "--calib", calib_file)
    assert code == 0 and not stderr_lines(err), err
    assert (tmp_path / "out" / "tiny-test" / "eager").is_symlink() and (real / "manifest.json").is_file()


def test_b55_bad_target_override_file(cli, tiny_checkpoint, calib_file, tmp_path, monkeypatch):
    (tmp_path / "home" / "targets").mkdir(parents=True)
    override = tmp_path / "home" / "targets" / "eager.toml"
    override.write_text("[tolerances\nforces_abs = 1\n")
    monkeypatch.setenv("DEPLOYCC_HOME", str(tmp_path / "home"))
    cli_error(cli("build", "--model", tiny_checkpoint, "--target", "eager", "--out", tmp_path, "--calib", calib_file),
              USER, f"{override}: not valid TOML")
    override.write_text("speed = 'fast'\n")
    cli_error(cli("build", "--model", tiny_checkpoint, "--target", "eager", "--out", tmp_path, "--calib", calib_file),
              USER, f"{override}: unknown setting(s) speed")


# --- usage errors, devices, destinations, broken checkpoints (issue 12) ----------------------------------


@pytest.mark.parametrize("args, fragment", [
    (["build", "--bogus"], "No such option: --bogus"),
    (["train", "--batch-size", "abc"], "Invalid value for '--batch-size'"),
    (["verify"], "Missing argument 'artifact'"),
    (["frobnicate"], "No such command 'frobnicate'"),
], ids=["unknown-flag", "bad-value", "missing-argument", "unknown-command"])
def test_b63_usage_errors_exit_64(args, fragment):  # real process
    line = assert_cli_error(run_cli(*args), 64, fragment)
    assert line.endswith("--help')"), line  # says where the options are listed


def test_b63_no_arguments_prints_the_help_and_exits_0():  # real process
    result = run_cli()
    assert result.returncode == 0 and "Usage" in result.stdout and result.stderr.strip() == ""


def test_b64_unknown_device(cli, artifact, tmp_path):
    structures = tmp_path / "in.extxyz"
    ase.io.write(structures, molecules(2))
    cli_error(cli("predict", artifact, "--device", "tpu", "--structures", structures, "--out", tmp_path / "o.extxyz"),
              USER, "device 'tpu' is not one deploycc runs on: give cpu, cuda or cuda:N")
    assert not (tmp_path / "o.extxyz").exists()
    with pytest.raises(UserInputError, match="device 'gpu0' is not one deploycc runs on"):
        load(artifact, device="gpu0")


def test_b62_far_coordinate_through_predict_is_one_line_not_a_crash(artifact, tmp_path):  # real process
    structures = tmp_path / "far.extxyz"
    ase.io.write(structures, [Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [1e30, 0, 0]])])
    result = run_cli("predict", artifact, "--structures", structures, "--out", tmp_path / "o.extxyz")
    assert_cli_error(result, USER, "structure 0 (H2O) has a coordinate of 1e+30 Å")
    assert not (tmp_path / "o.extxyz").exists()


@pytest.mark.parametrize("where", ["a-file", "below-a-file"])
def test_b65_build_out_that_is_or_sits_below_a_file(cli, tiny_checkpoint, calib_file, tmp_path, where):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder\n")
    out = blocker if where == "a-file" else blocker / "deeper"
    cli_error(cli("build", "--model", tiny_checkpoint, "--target", "eager", "--out", out, "--calib", calib_file),
              USER, f"{blocker} is a file, not a folder (choose another --out)")
    assert blocker.read_text() == "not a folder\n"


def test_b65_build_out_that_is_not_writable(cli, tiny_checkpoint, calib_file, tmp_path, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == tmp_path else real_access(path, mode))
    cli_error(cli("build", "--model", tiny_checkpoint, "--target", "eager", "--out", tmp_path / "new",
                  "--calib", calib_file), STORAGE, f"{tmp_path} is not writable")
    assert not (tmp_path / "new").exists()


def test_b66_a_checkpoint_whose_eager_model_overflows(cli, tmp_path, calib_file):
    model = make_model()
    with torch.no_grad():
        model.scale.fill_(3e38)  # finite weights, infinite energies
    path = tmp_path / "overflow.pt"
    save_checkpoint(model, path, {"teacher": "none"})
    line = cli_error(cli("build", "--model", path, "--target", "eager", "--out", tmp_path, "--calib", calib_file),
                     USER, f"checkpoint {path}: it gives NaN or infinite energies or forces (eager, on calibration "
                           "structure")
    assert "before any export is involved" in line
    assert not (tmp_path / "overflow" / "eager").exists()


def test_b67_manifest_naming_an_unknown_target(cli, artifact_copy, calib_file):
    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    manifest["target"] = "tensorflow"
    (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
    cli_error(cli("verify", artifact_copy, "--data", calib_file), USER,
              f"{artifact_copy / 'manifest.json'}: target 'tensorflow' is not one this deploycc knows")


def _labelled_file(path: Path, teacher: str, elements: tuple[int, ...] = (1, 6, 8), count: int = 12) -> Path:
    from deploycc.data.schema import Structures, write_h5

    rng = np.random.default_rng(len(str(path)))
    mols = [random_molecule(rng, 5) for _ in range(count)]
    numbers = [np.asarray(rng.choice(elements, len(z))) for z, _ in mols]
    data = Structures(numbers=numbers, positions=[r for _, r in mols], energies=rng.normal(size=count),
                      forces=[rng.normal(size=(len(z), 3)) for z in numbers], group=np.arange(count),
                      splits={"train": np.arange(8), "val": np.arange(8, 10), "test": np.arange(10, 12)},
                      attrs={"teacher": teacher})
    write_h5(data, path)
    return path


def test_b96_alloy_fraction_outside_its_range(cli, tmp_path):
    for bad in ("0.5:0.3", "0.2:0.7", "half"):
        cli_error(cli("data", "metals", "--out", tmp_path / "m.h5", "--alloy-fraction", bad), USER,
                  "--alloy-fraction must be MIN:MAX with 0 < MIN <= MAX <= 0.5", repr(bad))
    assert not (tmp_path / "m.h5").exists()


def test_b97_merging_two_teachers_or_into_an_input(cli, tmp_path):
    a, b = _labelled_file(tmp_path / "a.h5", "emt"), _labelled_file(tmp_path / "b.h5", "xtb")
    cli_error(cli("data", "merge", a, b, "--out", tmp_path / "ab.h5"), USER,
              f"{b} was labelled by 'xtb', {a} by 'emt': merge datasets of one teacher")
    assert not (tmp_path / "ab.h5").exists()
    before = a.read_bytes()
    cli_error(cli("data", "merge", a, b, "--out", a), USER, f"--out {a} is an input of this command")
    assert a.read_bytes() == before


def test_b98_train_init_of_another_architecture_or_without_the_datasets_elements(cli, tmp_path):
    plain = _labelled_file(tmp_path / "d.h5", "emt")
    cli_error(cli("train", "--data", plain, "--model", "tiny", "--init", "ultra-tiny", "--out", tmp_path / "s.pt"),
              USER, "--init ultra-tiny is a ModelConfig(hidden_dim=32", "not the ModelConfig(hidden_dim=64")
    gold = _labelled_file(tmp_path / "gold.h5", "emt", elements=(1, 6, 79))
    cli_error(cli("train", "--data", gold, "--model", "tiny", "--init", "tiny", "--out", tmp_path / "s.pt"),
              USER, "--init tiny never trained on element(s) Z=[79] of this dataset")
    assert not (tmp_path / "s.pt").exists()
