"""deploycc.api.load() and the ASE calculator over checkpoints and artifacts."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.optimize import BFGS

from deploycc.api import load
from deploycc.ase import DeployccCalculator
from deploycc.errors import UserInputError
from deploycc.pipeline import build

from conftest import random_molecule


def molecules(count: int, seed: int = 3) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    return [Atoms(numbers=z, positions=r) for z, r in (random_molecule(rng, n) for n in rng.integers(2, 14, count))]


def test_checkpoint_predictor_matches_per_structure_calls(tiny_checkpoint):
    predictor = load(tiny_checkpoint)
    atoms = molecules(7)
    energies, forces = predictor.predict(atoms)
    for k, a in enumerate(atoms):
        e1, f1 = predictor.predict([a])
        assert energies[k] == pytest.approx(e1[0], abs=2e-3)
        np.testing.assert_allclose(forces[k], f1[0], atol=1e-4)
        assert forces[k].shape == (len(a), 3)


def test_predictor_splits_batches_at_the_profile_maximum(tiny_checkpoint):
    predictor = load(tiny_checkpoint)
    atoms = molecules(9)
    full_e, full_f = predictor.predict(atoms)
    predictor.max_batch = 2
    split_e, split_f = predictor.predict(atoms)
    np.testing.assert_allclose(full_e, split_e, atol=2e-3)
    for a, b in zip(full_f, split_f):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_artifact_predictor_and_ase_calculator(tiny_checkpoint, calib_file, tmp_path):
    result = build(str(tiny_checkpoint), "torchscript", tmp_path, calib=calib_file)
    rng = np.random.default_rng(11)
    numbers, positions = random_molecule(rng, 9)
    atoms = Atoms(numbers=numbers, positions=positions)
    eager_e, eager_f = load(tiny_checkpoint).predict([atoms])
    atoms.calc = DeployccCalculator(result.folder)
    assert atoms.get_potential_energy() == pytest.approx(eager_e[0], abs=2e-3)
    np.testing.assert_allclose(atoms.get_forces(), eager_f[0], atol=1e-4)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(eager_e[0], abs=2e-3)
    start = atoms.get_potential_energy()
    assert np.abs(atoms.get_forces()).max() > 1e-2
    BFGS(atoms, logfile=None).run(fmax=1e-4, steps=5)
    assert atoms.get_potential_energy() < start  # an optimiser runs unchanged on the artifact


@pytest.mark.parametrize(
    "atoms, message",
    [
        (Atoms(), "no atoms"),
        (Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]]), "NaN"),
        (Atoms(numbers=[1, 0], positions=[[0, 0, 0], [1, 0, 0]]), "atomic number"),
        (Atoms(numbers=[1, 110], positions=[[0, 0, 0], [1, 0, 0]]), "atomic number 110"),
        (Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]], cell=[5, 5, 5], pbc=True), "without PBC support"),
    ],
)
def test_bad_structures_are_refused(tiny_checkpoint, atoms, message):
    with pytest.raises(UserInputError, match=message):
        load(tiny_checkpoint).predict([atoms])


def test_too_many_atoms_for_the_profile(tiny_checkpoint, calib_file, tmp_path):
    result = build(str(tiny_checkpoint), "eager", tmp_path, calib=calib_file)
    predictor = load(result.folder)
    big = Atoms(numbers=[1] * (predictor.max_atoms + 1),
                positions=np.arange(3 * (predictor.max_atoms + 1)).reshape(-1, 3) * 1.0)
    with pytest.raises(UserInputError, match="at most"):
        predictor.predict([big])


# --- periodic structures --------------------------------------------------------------------------------------


def test_periodic_artifact_through_ase_matches_eager_and_supercell(periodic_checkpoint, periodic_calib_file, tmp_path):
    from ase.build import bulk

    result = build(str(periodic_checkpoint), "onnx", tmp_path, calib=periodic_calib_file)
    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    cell.rattle(0.05, seed=2)
    atoms = cell.copy()
    atoms.calc = DeployccCalculator(result.folder)
    eager = load(periodic_checkpoint)
    e_eager, f_eager = eager.predict([cell])
    assert atoms.get_potential_energy() == pytest.approx(e_eager[0], abs=1e-4)
    np.testing.assert_allclose(atoms.get_forces(), f_eager[0], atol=1e-4)
    supercell = cell.repeat((2, 2, 2))
    supercell.calc = DeployccCalculator(result.folder)
    assert supercell.get_potential_energy() == pytest.approx(8 * e_eager[0], rel=1e-5)
    _, _, s_eager = eager.evaluate([cell])
    voigt = atoms.get_stress()  # ASE order xx yy zz yz xz xy, from the ONNX graph's virial
    np.testing.assert_allclose(voigt[:3], np.diag(s_eager[0]), atol=1e-6)
    np.testing.assert_allclose(voigt[3:], [s_eager[0][1, 2], s_eager[0][0, 2], s_eager[0][0, 1]], atol=1e-6)
    np.testing.assert_allclose(supercell.get_stress(), voigt, atol=1e-6)  # intensive


def test_stress_uses_the_cell_as_given_and_is_absent_for_molecules(periodic_checkpoint):
    """A slab's virial is divided by its full cell volume, vacuum included, as ASE's own calculators do."""
    from ase.build import fcc111
    from ase.calculators.calculator import PropertyNotImplementedError

    predictor = load(periodic_checkpoint)
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=4.0)
    slab.pbc = (True, True, False)
    thicker = slab.copy()
    thicker.center(vacuum=8.0, axis=2)  # the same slab in a taller cell
    _, _, stresses = predictor.evaluate([slab, thicker])
    ratio = thicker.get_volume() / slab.get_volume()
    np.testing.assert_allclose(stresses[0], stresses[1] * ratio, atol=1e-9)
    assert np.abs(stresses[0]).max() > 1e-4
    molecule = Atoms("Cu2", positions=[[0, 0, 0], [2.4, 0, 0]])
    molecule.calc = DeployccCalculator(predictor)
    molecule.get_potential_energy()
    with pytest.raises(PropertyNotImplementedError):
        molecule.get_stress()


def test_cell_relaxation_with_the_shipped_metals_preset():
    """FrechetCellFilter + BFGS on stress and forces: the relaxed Cu lattice constant lands near EMT's, the
    teacher metals-tiny was distilled from."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.filters import FrechetCellFilter

    def relaxed_a(calc) -> float:
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True)
        atoms.calc = calc
        BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-3, steps=200)
        return float(np.cbrt(atoms.get_volume()))

    student, teacher = relaxed_a(DeployccCalculator("metals-tiny")), relaxed_a(EMT())
    assert abs(student - teacher) / teacher < 0.01
    assert abs(student - 3.75) > 0.05  # it moved


@pytest.mark.parametrize("cell, pbc, message", [
    ([[3.6, 0, 0], [7.2, 0, 0], [0, 0, 3.6]], True, "zero volume"),
    ([[np.nan, 0, 0], [0, 3.6, 0], [0, 0, 3.6]], True, "NaN"),
    ([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], True, "too small"),
])
def test_bad_periodic_cells_are_refused_naming_the_structure(periodic_checkpoint, cell, pbc, message):
    predictor = load(periodic_checkpoint)
    good = Atoms("Cu4", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
                 cell=np.eye(3) * 3.61, pbc=True)
    bad = Atoms("Cu2", positions=[[0, 0, 0], [0.9, 0.9, 0.9]], pbc=pbc)
    bad.cell.array[:] = np.array(cell, dtype=float)
    with pytest.raises(UserInputError, match=message) as info:
        predictor.predict([good, bad])
    assert "structure 1" in str(info.value) and "\n" not in str(info.value)


def test_calculator_recomputes_exactly_when_the_model_inputs_change(tiny_checkpoint):
    """check_state compares numbers, positions, cell and pbc exactly; other arrays (charges) don't matter."""
    calc = DeployccCalculator(load(tiny_checkpoint))
    calls = []
    predict = calc.predictor.predict
    calc.predictor.predict = lambda atoms_list: calls.append(1) or predict(atoms_list)
    atoms = Atoms(*random_molecule(np.random.default_rng(3), 6))
    atoms.calc = calc
    first = atoms.get_potential_energy()
    atoms.get_forces()
    atoms.set_initial_charges(np.ones(len(atoms)))
    assert atoms.get_potential_energy() == first and len(calls) == 1  # cached
    assert calc.check_state(atoms) == []
    atoms.positions[2, 1] += 1e-9
    assert calc.check_state(atoms) == ["positions"]
    atoms.get_potential_energy()
    assert len(calls) == 2
    changed = atoms.copy()
    changed.numbers[0] = 1 if changed.numbers[0] != 1 else 6
    changed.cell = [10.0, 10.0, 10.0]
    changed.pbc = [True, False, False]
    assert calc.check_state(changed) == ["numbers", "cell", "pbc"]


def test_calculator_first_call_and_a_change_of_length(tiny_checkpoint):
    calc = DeployccCalculator(load(tiny_checkpoint))
    atoms = Atoms(*random_molecule(np.random.default_rng(4), 5))
    assert set(calc.check_state(atoms)) >= {"positions", "numbers", "cell", "pbc"}  # nothing computed yet
    atoms.calc = calc
    atoms.get_forces()
    longer = atoms + Atoms("H", positions=[[9.0, 9.0, 9.0]])
    assert calc.check_state(longer) == ["positions", "numbers"]
    longer.calc = calc
    assert longer.get_forces().shape == (6, 3)


def test_coincident_atoms_finds_the_first_pair_and_ignores_nan():
    from deploycc.api import coincident_atoms

    positions = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [1.0, 0, 0.0001], [0.0, 0, 0]])
    assert coincident_atoms(positions) == (0, 4)
    assert coincident_atoms(positions[:3]) is None
    assert coincident_atoms(np.array([[np.nan, 0, 0], [0.0, 0, 0]])) is None
