"""`deploycc predict`: a file in, labelled extxyz out (input order, same numbers as the API), stress from
periodic models, one-line errors, and no half-written output."""

from __future__ import annotations

import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111

from deploycc.api import load
from deploycc.errors import UserInputError
from deploycc.predict import predict_file

from conftest import random_molecule


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploycc", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def molecules(count: int, seed: int = 5) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    return [Atoms(numbers=z, positions=r) for z, r in (random_molecule(rng, n) for n in rng.integers(2, 12, count))]


def test_cli_writes_every_structure_in_input_order(tiny_checkpoint, tmp_path):
    inputs = molecules(9)  # mixed sizes: evaluated sorted by size, written back in input order
    ase.io.write(tmp_path / "in.extxyz", inputs)
    result = run_cli("predict", str(tiny_checkpoint), "--structures", str(tmp_path / "in.extxyz"),
                     "--out", str(tmp_path / "out.extxyz"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "9 structures" in result.stdout and "structures/s" in result.stdout
    written = ase.io.read(tmp_path / "out.extxyz", index=":")
    energies, forces = load(tiny_checkpoint).predict(inputs)
    assert [len(a) for a in written] == [len(a) for a in inputs]
    for atoms, original, energy, force in zip(written, inputs, energies, forces):
        np.testing.assert_allclose(atoms.positions, original.positions, atol=1e-6)
        assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-5)
        np.testing.assert_allclose(atoms.get_forces(), force, atol=1e-5)
    assert not list(tmp_path.glob(".out.extxyz.tmp-*"))


def test_periodic_structures_get_stress(periodic_checkpoint, tmp_path):
    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    cell.rattle(0.03, seed=4)
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=4.0)
    slab.pbc = (True, True, False)
    cluster = Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0]])
    ase.io.write(tmp_path / "metals.extxyz", [cell, slab, cluster])
    predictor = load(periodic_checkpoint)
    report = predict_file(predictor, tmp_path / "metals.extxyz", tmp_path / "out.extxyz")
    assert report.structures == 3 and report.stress
    written = ase.io.read(tmp_path / "out.extxyz", index=":")
    _, _, stresses = predictor.evaluate([cell, slab, cluster])
    np.testing.assert_allclose(written[0].get_stress(voigt=False), stresses[0], atol=1e-6)
    np.testing.assert_allclose(written[1].get_stress(voigt=False), stresses[1], atol=1e-6)
    assert "stress" not in written[2].calc.results  # no periodic axes: no stress


def test_bad_structure_is_refused_by_its_index_before_any_output(tiny_checkpoint, tmp_path):
    inputs = molecules(4)
    inputs[2] = Atoms("CC", positions=[[0, 0, 0], [0, 0, 0]])  # coincident atoms
    ase.io.write(tmp_path / "in.extxyz", inputs)
    (tmp_path / "out.extxyz").write_text("previous results\n")
    with pytest.raises(UserInputError, match="structure 2"):
        predict_file(load(tiny_checkpoint), tmp_path / "in.extxyz", tmp_path / "out.extxyz")
    assert (tmp_path / "out.extxyz").read_text() == "previous results\n"


@pytest.mark.parametrize("content, fragment", [(None, "does not exist"), ("garbage\n", "cannot read")])
def test_unreadable_input_is_one_line_exit_65(content, fragment, tmp_path):
    path = tmp_path / "in.extxyz"
    if content is not None:
        path.write_text(content)
    result = run_cli("predict", "ultra-tiny", "--structures", str(path), "--out", str(tmp_path / "o.extxyz"),
                     cwd=tmp_path)
    assert result.returncode == 65, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]


def test_long_files_stream_in_chunks_with_file_indices(tiny_checkpoint, tmp_path, monkeypatch):
    import deploycc.predict as predict

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
    with pytest.raises(UserInputError, match="structure 7 "):
        predict_file(load(tiny_checkpoint), tmp_path / "bad.extxyz", tmp_path / "bad-out.extxyz")
    assert not (tmp_path / "bad-out.extxyz").exists()
