"""`deploycc predict`: a file in, labelled extxyz out (input order, same numbers as the API), stress for every
structure with periodic axes, one-line errors, the destination checked before any work, and no
half-written output."""

from __future__ import annotations

import re

import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111

from deploycc.api import load
from deploycc.errors import StorageError, UserInputError
from deploycc.runtime.predict import check_destination, predict_file

from helpers import random_molecule


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "deploycc", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def one_error_line(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def molecules(count: int, seed: int = 5) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    return [Atoms(numbers=z, positions=r) for z, r in (random_molecule(rng, n) for n in rng.integers(2, 12, count))]


def test_cli_writes_every_structure_in_input_order(tiny_checkpoint, tmp_path):
    inputs = molecules(9)  # mixed sizes: evaluated grouped by neighbour count, written back in input order
    ase.io.write(tmp_path / "in.extxyz", inputs)
    result = run_cli("predict", tiny_checkpoint, "--structures", tmp_path / "in.extxyz",
                     "--out", tmp_path / "out.extxyz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "9 structures" in result.stdout and "structures/s" in result.stdout and "stress" not in result.stdout
    written = ase.io.read(tmp_path / "out.extxyz", index=":")
    energies, forces = load(tiny_checkpoint).predict(inputs)
    assert [len(a) for a in written] == [len(a) for a in inputs]
    for atoms, original, energy, force in zip(written, inputs, energies, forces):
        np.testing.assert_array_equal(atoms.numbers, original.numbers)
        np.testing.assert_allclose(atoms.positions, original.positions, atol=1e-6)
        assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-5)
        np.testing.assert_allclose(atoms.get_forces(), force, atol=1e-5)
    assert not list(tmp_path.glob(".out.extxyz.tmp-*"))


@pytest.mark.parametrize("which", ["periodic", "molecular"])
def test_periodic_structures_get_stress_from_any_model(which, periodic_checkpoint, tiny_checkpoint, tmp_path):
    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    cell.rattle(0.03, seed=4)
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=4.0)
    slab.pbc = (True, True, False)
    slab.info.clear()  # fcc111's adsorbate_info does not go into extxyz
    cluster = Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0]])
    ase.io.write(tmp_path / "metals.extxyz", [cell, slab, cluster])
    predictor = load(periodic_checkpoint if which == "periodic" else tiny_checkpoint, unseen_elements="allow")
    report = predict_file(predictor, tmp_path / "metals.extxyz", tmp_path / "out.extxyz")
    assert report.structures == 3 and report.atoms == 4 + 12 + 3 and report.stress
    written = ase.io.read(tmp_path / "out.extxyz", index=":")
    energies, _, stresses = predictor.evaluate([cell, slab, cluster])
    np.testing.assert_allclose([a.get_potential_energy() for a in written], energies, atol=1e-5)
    np.testing.assert_allclose(written[0].get_stress(voigt=False), stresses[0], atol=1e-6)
    np.testing.assert_allclose(written[1].get_stress(voigt=False), stresses[1], atol=1e-6)
    assert np.abs(stresses[0]).max() > 1e-4
    assert "stress" not in written[2].calc.results  # no periodic axes: no stress
    np.testing.assert_array_equal(written[1].pbc, [True, True, False])


def test_hdf5_input(tiny_checkpoint, calib_file, tmp_path):
    from deploycc.data.schema import read_structures

    report = predict_file(load(tiny_checkpoint), calib_file, tmp_path / "out.xyz")
    data = read_structures(calib_file)
    written = ase.io.read(tmp_path / "out.xyz", index=":", format="extxyz")
    assert report.structures == len(data) == len(written) and not report.stress
    energies, _ = load(tiny_checkpoint).predict(data.to_atoms())
    np.testing.assert_allclose([a.get_potential_energy() for a in written], energies, atol=1e-5)


def test_bad_structure_is_refused_by_its_index_before_any_output(tiny_checkpoint, tmp_path):
    inputs = molecules(4)
    inputs[2] = Atoms("CC", positions=[[0, 0, 0], [0, 0, 0]])  # coincident atoms
    ase.io.write(tmp_path / "in.extxyz", inputs)
    (tmp_path / "out.extxyz").write_text("previous results\n")
    predictor = load(tiny_checkpoint)
    calls: list[int] = []
    run = predictor.run
    predictor.run = lambda batch, *rest: calls.append(batch.atoms) or run(batch, *rest)
    with pytest.raises(UserInputError, match=rf"^{re.escape(str(tmp_path / 'in.extxyz'))}: structure 2 \(C2\) has atoms 0 "
                                             r"and 1 0 Å apart, closer than the 0.5 Å tiny-test/eager accepts"):
        predict_file(predictor, tmp_path / "in.extxyz", tmp_path / "out.extxyz")
    assert calls == []  # no model call at all
    assert (tmp_path / "out.extxyz").read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.extxyz", "out.extxyz"]


@pytest.mark.parametrize("content, fragment", [(None, "structure file {path} does not exist"),
                                               ("garbage\n", "cannot read {path} with ASE"),
                                               ("", "cannot read {path} with ASE")])
def test_unreadable_input_is_one_line_exit_65(content, fragment, tmp_path):
    path = tmp_path / "in.extxyz"
    if content is not None:
        path.write_text(content)
    result = run_cli("predict", "ultra-tiny", "--structures", path, "--out", tmp_path / "o.extxyz", cwd=tmp_path)
    assert fragment.format(path=path) in one_error_line(result, 65)
    assert not (tmp_path / "o.extxyz").exists()


def test_long_files_stream_in_chunks_with_file_indices(tiny_checkpoint, tmp_path, monkeypatch):
    import deploycc.runtime.predict as predict

    monkeypatch.setattr(predict, "CHUNK", 3)  # 8 structures: chunks of 3, 3, 2
    inputs = molecules(8, seed=9)
    ase.io.write(tmp_path / "in.extxyz", inputs)
    progress: list[tuple[int, int]] = []
    report = predict_file(load(tiny_checkpoint), tmp_path / "in.extxyz", tmp_path / "out.extxyz",
                          on_progress=lambda done, total: progress.append((done, total)))
    assert report.structures == 8 and progress == [(3, 8), (6, 8), (8, 8)]
    written = ase.io.read(tmp_path / "out.extxyz", index=":")
    energies, _ = load(tiny_checkpoint).predict(inputs)
    np.testing.assert_allclose([a.get_potential_energy() for a in written], energies, atol=1e-5)
    inputs[7] = Atoms("CC", positions=[[0, 0, 0], [0, 0, 0]])  # in the last chunk: named by its file index
    ase.io.write(tmp_path / "bad.extxyz", inputs)
    with pytest.raises(UserInputError, match=rf"^{re.escape(str(tmp_path / 'bad.extxyz'))}: structure 7 "):
        predict_file(load(tiny_checkpoint), tmp_path / "bad.extxyz", tmp_path / "bad-out.extxyz")
    assert not (tmp_path / "bad-out.extxyz").exists()


def test_an_interrupted_run_leaves_the_previous_output(tiny_checkpoint, tmp_path, monkeypatch):
    import deploycc.runtime.predict as predict

    monkeypatch.setattr(predict, "CHUNK", 2)
    ase.io.write(tmp_path / "in.extxyz", molecules(6))
    (tmp_path / "out.extxyz").write_text("previous results\n")
    predictor = load(tiny_checkpoint)
    evaluate, calls = predictor.evaluate, []

    def interrupted(chunk, check=True):
        calls.append(len(chunk))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(chunk, check)

    predictor.evaluate = interrupted
    with pytest.raises(KeyboardInterrupt):
        predict_file(predictor, tmp_path / "in.extxyz", tmp_path / "out.extxyz")
    assert calls == [2, 2]
    assert (tmp_path / "out.extxyz").read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.extxyz", "out.extxyz"]


# --- the destination, checked before anything is loaded -----------------------------------------------------


def test_destinations_that_are_refused(tmp_path):
    source = tmp_path / "in.extxyz"
    ase.io.write(source, molecules(1))
    (tmp_path / "folder.extxyz").mkdir()
    (tmp_path / "plain").write_text("x")
    cases = [
        (source, f"--out {source} is the input file: write the predictions to another file"),
        (tmp_path / "." / "in.extxyz", "is the input file"),
        (tmp_path / "folder.extxyz",
         f"--out {tmp_path / 'folder.extxyz'} is a folder; give a file name ending in .extxyz"),
        (tmp_path / "out.h5", f"--out {tmp_path / 'out.h5'}: predictions are written as extended XYZ; name the file "
                              "out.extxyz (.extxyz or .xyz)"),
        (tmp_path / "out", "name the file out.extxyz"),
        (tmp_path / "plain" / "out.extxyz", f"{tmp_path / 'plain'} is not a folder"),
    ]
    for out, fragment in cases:
        with pytest.raises(UserInputError) as info:
            check_destination(out, source)
        assert fragment in str(info.value) and "\n" not in str(info.value), (out, str(info.value))
    linked = tmp_path / "link.extxyz"
    linked.symlink_to(source)
    with pytest.raises(UserInputError, match="is the input file"):
        check_destination(linked, source)
    assert check_destination(tmp_path / "new" / "sub" / "out.XYZ", source) == tmp_path / "new" / "sub" / "out.XYZ"
    assert (tmp_path / "new" / "sub").is_dir()


def test_an_unwritable_destination_is_a_storage_error(tmp_path, monkeypatch):
    import deploycc.runtime.predict as predict

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(predict.os, "access",
                        lambda path, mode: False if Path(path) == locked else real_access(path, mode))
    with pytest.raises(StorageError, match=f"cannot write {locked / 'out.extxyz'}: {locked} is not writable") as info:
        check_destination(locked / "out.extxyz", tmp_path / "in.extxyz")
    assert info.value.exit_code == 74
    check_destination(tmp_path / "out.extxyz", tmp_path / "in.extxyz")  # the same check passes elsewhere


def test_the_cli_checks_the_destination_before_loading_the_model(tmp_path):
    """A bad --out is reported even with a model that does not exist: nothing was loaded or read first."""
    source = tmp_path / "in.extxyz"
    ase.io.write(source, molecules(2))
    before = source.read_bytes()
    result = run_cli("predict", "no-such-model", "--structures", source, "--out", source, cwd=tmp_path)
    assert "is the input file" in one_error_line(result, 65)
    assert source.read_bytes() == before
    result = run_cli("predict", "no-such-model", "--structures", source, "--out", tmp_path / "out.csv", cwd=tmp_path)
    assert "predictions are written as extended XYZ" in one_error_line(result, 65)
