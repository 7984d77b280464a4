"""Bad inputs, one test per row of docs/bad-inputs.md: exact exit code, one line, no traceback, nothing half-written.

Most rows run the real command line in a subprocess; rows that must inject a fault (a full disk, Ctrl-C inside
an export) run `deploycc.cli.main` in-process.  The crash-safety kill test is in tests/test_crash_safety.py.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms

import deploycc.pipeline as pipeline_module
from deploycc.api import load
from deploycc.checkpoint import FORMAT_VERSION, save_checkpoint
from deploycc.cli import main
from deploycc.errors import ArtifactError, UnseenElementWarning, UserInputError
from deploycc.model import PRESET_CONFIGS
from deploycc.pipeline import build
from deploycc.targets.base import Exported, register
from deploycc.targets.eager import EagerTarget

from conftest import make_model, random_molecule

USER, MISSING, PARITY, STORAGE, INTERRUPTED = 65, 2, 1, 74, 130


# --- helpers -----------------------------------------------------------------------------------------------


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "deploycc", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


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


def assert_cli_error(result: subprocess.CompletedProcess, expected_code: int, *fragments: str) -> str:
    return assert_one_line(result.returncode, result.stdout, result.stderr, expected_code, *fragments)


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`deploycc ARGS` in this process (so faults can be monkeypatched in): exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["deploycc", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


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


@pytest.fixture
def artifact_copy(artifact, tmp_path) -> Path:
    """A private copy of the artifact that a test may damage."""
    import shutil

    copy = tmp_path / "copy" / artifact.name
    shutil.copytree(artifact, copy)
    return copy


def h2(offset: float = 0.0) -> Atoms:
    return Atoms("H2", positions=[[offset, 0, 0], [offset + 0.74, 0, 0]])


# --- checkpoints -------------------------------------------------------------------------------------------


def test_b01_missing_checkpoint(tmp_path):
    assert_cli_error(run_cli("build", "--model", tmp_path / "missing.pt", "--target", "eager", cwd=tmp_path),
                     USER, "missing.pt", "no such model or checkpoint")


def test_b02_empty_checkpoint(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    assert_cli_error(run_cli("build", "--model", "empty.pt", "--target", "eager", cwd=tmp_path),
                     USER, "empty.pt", "is empty")


def test_b03_truncated_checkpoint(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    assert_cli_error(run_cli("build", "--model", "truncated.pt", "--target", "eager", cwd=tmp_path),
                     USER, "truncated.pt", "corrupt or not a PyTorch file")


@pytest.mark.parametrize("seed", [0, 1])
def test_b04_random_bytes_checkpoint(tmp_path, seed):
    (tmp_path / "noise.pt").write_bytes(random.Random(seed).randbytes(4096))
    assert_cli_error(run_cli("build", "--model", "noise.pt", "--target", "eager", cwd=tmp_path),
                     USER, "noise.pt")


class _WritesMarker:
    """Unpickling this runs a shell command that creates a marker file: a stand-in for a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


@pytest.mark.parametrize("where", ["metadata", "whole-payload"])
def test_b05_pickled_code_is_refused_never_executed(tmp_path, where):
    marker = tmp_path / "code_ran"
    model = make_model()
    payload = {"format_version": FORMAT_VERSION, "model_config": model.config.to_dict(),
               "state_dict": model.state_dict(), "metadata": {"x": _WritesMarker(marker)}}
    torch.save(payload if where == "metadata" else _WritesMarker(marker), tmp_path / "evil.pt")
    result = run_cli("build", "--model", "evil.pt", "--target", "eager", cwd=tmp_path)
    assert_cli_error(result, USER, "evil.pt", "weights-only", "nothing in it was executed")
    assert not marker.exists()
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").rglob("manifest.json"))


def test_b06_wrong_architecture_for_its_weights(tmp_path):
    tiny = make_model()
    torch.save({"format_version": FORMAT_VERSION, "model_config": PRESET_CONFIGS["original"].to_dict(),
                "state_dict": tiny.state_dict(), "metadata": {}}, tmp_path / "mismatch.pt")
    assert_cli_error(run_cli("build", "--model", "mismatch.pt", "--target", "eager", cwd=tmp_path),
                     USER, "mismatch.pt", "does not fit its architecture", "embedding.weight")


def test_b07_model_prefixed_keys_load(tmp_path, calib_file):
    model = make_model(seed=3)
    torch.save({"model_state_dict": {"model." + k: v for k, v in model.state_dict().items()},
                "config": {"lr": 1e-3}}, tmp_path / "old_run.pt")
    result = run_cli("build", "--model", "old_run.pt", "--target", "eager", "--out", tmp_path / "out",
                     "--calib", calib_file, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and not stderr_lines(result.stderr)
    assert (tmp_path / "out" / "old_run" / "eager" / "manifest.json").is_file()


def test_b08_newer_checkpoint_format(tmp_path):
    model = make_model()
    torch.save({"format_version": FORMAT_VERSION + 1, "model_config": model.config.to_dict(),
                "state_dict": model.state_dict(), "metadata": {}}, tmp_path / "future.pt")
    assert_cli_error(run_cli("build", "--model", "future.pt", "--target", "eager", cwd=tmp_path),
                     USER, "future.pt", f"format_version {FORMAT_VERSION + 1}", "upgrade deploycc")


# --- names -------------------------------------------------------------------------------------------------


def test_b09_unknown_preset(tmp_path):
    assert_cli_error(run_cli("build", "--model", "huge", "--target", "eager", cwd=tmp_path),
                     USER, "'huge'", "tiny")


def test_b10_unknown_target(tmp_path):
    assert_cli_error(run_cli("build", "--model", "tiny", "--target", "tensorflow", cwd=tmp_path),
                     USER, "unknown target 'tensorflow'", "onnx")


# --- artifacts ---------------------------------------------------------------------------------------------


def test_b11_artifact_folder_without_manifest(artifact_copy, calib_file):
    (artifact_copy / "manifest.json").unlink()
    assert_cli_error(run_cli("verify", artifact_copy, "--data", calib_file), USER, str(artifact_copy),
                     "no manifest.json")


def test_b12_artifact_modified_after_build(artifact_copy, calib_file):
    with open(artifact_copy / "model.pt", "ab") as handle:
        handle.write(b"tampered")
    assert_cli_error(run_cli("verify", artifact_copy, "--data", calib_file), USER, "model.pt",
                     "does not match its manifest", "--force")


def test_b13_manifest_from_a_newer_format(artifact_copy, calib_file):
    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
    assert_cli_error(run_cli("verify", artifact_copy, "--data", calib_file), USER, "manifest.json",
                     "format_version 99", "upgrade deploycc")


# --- structures: the same refusal from the Python API and from `deploycc verify --data FILE` ---------------

BAD_STRUCTURES = {
    "b14-z-zero": (Atoms(numbers=[1, 0], positions=[[0, 0, 0], [1, 0, 0]]), "atomic number 0 outside 1..100"),
    "b15-z-above-max": (Atoms(numbers=[1, 110], positions=[[0, 0, 0], [1, 0, 0]]),
                        "atomic number 110 outside 1..100"),
    "b17-nan-position": (Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]]), "NaN or infinite positions"),
    "b17-inf-position": (Atoms("H2", positions=[[0, 0, 0], [0, np.inf, 0]]), "NaN or infinite positions"),
    "b18-coincident-atoms": (Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [0, 0, 0]]),
                             "atoms 0 and 2 at the same position"),
    "b19-zero-atoms": (Atoms(), "has no atoms"),
}


@pytest.mark.parametrize("name", list(BAD_STRUCTURES))
def test_bad_structure_through_the_api(name, artifact):
    atoms, fragment = BAD_STRUCTURES[name]
    predictor = load(artifact)
    with pytest.raises(UserInputError) as info:
        predictor.predict([h2(), atoms])
    message = str(info.value)
    assert "\n" not in message and fragment in message and "structure 1" in message


@pytest.mark.parametrize("name", list(BAD_STRUCTURES))
def test_bad_structure_through_verify(name, artifact, tmp_path):
    atoms, fragment = BAD_STRUCTURES[name]
    data = tmp_path / "bad.extxyz"
    ase.io.write(data, [h2(), atoms])
    assert_cli_error(run_cli("verify", artifact, "--data", data), USER, "bad.extxyz", "structure 1", fragment)


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
def test_b16_unseen_elements_verify(policy, artifact, tmp_path):
    data = tmp_path / "hf.extxyz"
    ase.io.write(data, [h2(), Atoms("HF", positions=[[0, 0, 0], [0.92, 0, 0]])])
    result = run_cli("verify", artifact, "--data", data, "--unseen-elements", policy)
    if policy == "refuse":
        assert_cli_error(result, USER, "hf.extxyz", "structure 1 (HF)", "F (Z=9)")
        return
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = stderr_lines(result.stderr)
    if policy == "warn":
        assert len(lines) == 1 and lines[0].startswith("warning: ") and "F (Z=9)" in lines[0], lines
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


def test_b20_more_atoms_than_the_profile(artifact):
    predictor = load(artifact)
    n = predictor.max_atoms + 1
    big = Atoms(numbers=[1] * n, positions=np.arange(3 * n).reshape(-1, 3) * 1.0)
    with pytest.raises(UserInputError, match=rf"structure 0 \(H{n}\) has {n} atoms; .* at most {n - 1}"):
        predictor.predict([big])


def test_b21_batch_larger_than_the_profile_is_split(artifact):
    predictor = load(artifact)
    assert predictor.max_batch == 1024
    calls: list[int] = []
    inner = predictor.runner

    class Counting:
        def __getattr__(self, name):
            return getattr(inner, name)

        def evaluate(self, numbers, positions, *rest):
            calls.append(int(numbers.shape[0]))
            return inner.evaluate(numbers, positions, *rest)

    predictor.runner = Counting()
    rng = np.random.default_rng(0)
    atoms = [Atoms(numbers=z, positions=r) for z, r in (random_molecule(rng, 3) for _ in range(1030))]
    energies, forces = predictor.predict(atoms)
    assert calls == [1024, 6]
    assert len(energies) == 1030 and np.isfinite(energies).all()
    single_e, single_f = predictor.predict([atoms[1029]])
    assert energies[1029] == pytest.approx(single_e[0], abs=2e-3)
    np.testing.assert_allclose(forces[1029], single_f[0], atol=1e-4)


# --- environment -------------------------------------------------------------------------------------------


def test_b22_tensorrt_or_gpu_missing_exits_2(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are present here")
    assert_cli_error(run_cli("build", "--model", "tiny", "--target", "trt", cwd=tmp_path), MISSING,
                     "target 'trt' cannot build here")


def test_b22_gpu_missing_for_a_cuda_target_exits_2(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present here")
    assert_cli_error(run_cli("build", "--model", "tiny", "--target", "torchscript", "--device", "cuda",
                             cwd=tmp_path), MISSING, "torchscript", "no CUDA GPU")


def test_b23_engine_from_another_gpu_or_tensorrt(tmp_path):
    """The runtime refusal is tests/targets/test_trt_compat.py; here: the one-line, exit-65 error class."""
    from deploycc.targets.trt import check_engine_compatibility

    built = {"tensorrt": "10.3.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    with pytest.raises(ArtifactError) as info:
        check_engine_compatibility(built, {**built, "tensorrt": "10.4.0", "gpu": "NVIDIA A100-SXM4-80GB"})
    assert info.value.exit_code == USER
    assert "\n" not in str(info.value) and "rebuild" in str(info.value)


# --- faults during a build ---------------------------------------------------------------------------------


def test_b24_disk_full_during_build(monkeypatch, capsys, tiny_checkpoint, calib_file, tmp_path):
    previous = build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file).folder
    before = snapshot(previous)

    def full(path, payload):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(pipeline_module, "write_json", full)
    code, out, err = run_main(monkeypatch, capsys, "build", "--model", tiny_checkpoint, "--target", "eager",
                              "--out", tmp_path, "--calib", calib_file, "--force")
    assert_one_line(code, out, err, STORAGE, "no space left on the device", "parity.json", "unchanged")
    assert snapshot(previous) == before
    assert leftovers(previous) == []


class _InterruptedTarget(EagerTarget):
    """A real eager export that is interrupted (Ctrl-C) after writing half its artifact."""

    name = "interrupted-bad-inputs-test"

    def export(self, model, settings, out_dir) -> Exported:
        exported = super().export(model, settings, out_dir)
        exported.path.write_bytes(exported.path.read_bytes()[:100])
        raise KeyboardInterrupt


register(_InterruptedTarget())


def test_b25_ctrl_c_during_build(monkeypatch, capsys, tiny_checkpoint, calib_file, tmp_path):
    import shutil

    good = build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file).folder
    previous = good.parent / _InterruptedTarget.name
    shutil.copytree(good, previous)  # a previous artifact in the interrupted target's folder
    before = snapshot(previous)
    code, out, err = run_main(monkeypatch, capsys, "build", "--model", tiny_checkpoint, "--target",
                              _InterruptedTarget.name, "--out", tmp_path, "--calib", calib_file, "--force")
    assert_one_line(code, out, err, INTERRUPTED, "interrupted while building", "unchanged")
    assert snapshot(previous) == before
    assert leftovers(previous) == []


def test_b26_two_builds_into_the_same_folder(tiny_checkpoint, calib_file, tmp_path):
    final = tmp_path / "tiny-test" / "eager"
    final.parent.mkdir(parents=True)
    with open(final.parent / ".eager.lock", "w") as handle:  # another build holds the folder's lock
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_cli("build", "--model", tiny_checkpoint, "--target", "eager", "--out", tmp_path,
                         "--calib", calib_file)
    assert_cli_error(result, USER, "another build is writing", str(final), "wait for it")
    assert not final.exists() and leftovers(final) == []


# --- more bad arguments ------------------------------------------------------------------------------------


def test_b27_unreadable_structure_file(artifact, tmp_path):
    (tmp_path / "junk.xyz").write_text("this is not\nan xyz file\n")
    assert_cli_error(run_cli("verify", artifact, "--data", tmp_path / "junk.xyz"), USER, "junk.xyz",
                     "cannot read")


def test_b28_missing_calibration_file(tiny_checkpoint, tmp_path):
    assert_cli_error(run_cli("build", "--model", tiny_checkpoint, "--target", "eager", "--out", tmp_path,
                             "--calib", tmp_path / "nope.h5"), USER, "nope.h5", "does not exist")


def test_b29_bad_unseen_elements_value(artifact, calib_file):
    assert_cli_error(run_cli("verify", artifact, "--data", calib_file, "--unseen-elements", "sometimes"), USER,
                     "unseen_elements must be one of warn, refuse, allow", "'sometimes'")


def test_verify_names_the_file_index_of_a_degenerate_periodic_cell(tmp_path, periodic_checkpoint, periodic_calib_file):
    """B34 through the CLI: the structure is named by its index in the file, not in its batch."""
    import subprocess
    import sys

    import ase.io
    from ase.build import bulk

    from deploycc.pipeline import build

    folder = build(str(periodic_checkpoint), "eager", tmp_path / "art", calib=periodic_calib_file).folder
    good = [bulk("Cu", "fcc", a=3.61, cubic=True) for _ in range(5)]
    bad = bulk("Cu", "fcc", a=3.61, cubic=True)
    bad.cell[1] = bad.cell[0]  # collinear lattice vectors: zero volume
    path = tmp_path / "cells.extxyz"
    ase.io.write(path, good + [bad])
    run = subprocess.run([sys.executable, "-m", "deploycc", "verify", str(folder), "--data", str(path)],
                         capture_output=True, text=True)
    assert run.returncode == 65, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "structure 5" in lines[0] and "zero volume" in lines[0], run.stderr
    assert "Traceback" not in run.stderr
