"""The ASE calculator (deploycc.ase.DeployccCalculator) over artifacts, checkpoints and presets: energies,
forces and stress, the Verlet skin, exact change detection, refusals, and the one-thread rule."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.calculator import PropertyNotImplementedError
from ase.optimize import BFGS

from deploycc.api import load
from deploycc.ase import DeployccCalculator, calculator_results
from deploycc.build import build
from deploycc.errors import UnseenElementWarning, UserInputError

from helpers import random_molecule


@pytest.fixture(scope="module")
def eager_artifact(tiny_checkpoint, calib_file, tmp_path_factory):
    return build(str(tiny_checkpoint), "eager", tmp_path_factory.mktemp("art"), calib=calib_file).folder


@pytest.fixture(scope="module")
def periodic_onnx(periodic_checkpoint, periodic_calib_file, tmp_path_factory):
    return build(str(periodic_checkpoint), "onnx", tmp_path_factory.mktemp("art"), calib=periodic_calib_file).folder


def rattled_cu(seed: int = 2) -> Atoms:
    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    cell.rattle(0.05, seed=seed)
    return cell


def test_artifact_calculator_matches_eager_and_optimises(eager_artifact, tiny_checkpoint):
    atoms = Atoms(*random_molecule(np.random.default_rng(11), 9))
    eager_e, eager_f = load(tiny_checkpoint).predict([atoms])
    atoms.calc = DeployccCalculator(eager_artifact)
    assert atoms.get_potential_energy() == pytest.approx(eager_e[0], abs=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), eager_f[0], atol=1e-6)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(eager_e[0], abs=1e-6)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()  # a molecule has no stress
    start = atoms.get_potential_energy()
    assert np.abs(atoms.get_forces()).max() > 1e-2
    BFGS(atoms, logfile=None).run(fmax=1e-4, steps=5)
    assert atoms.get_potential_energy() < start  # an optimiser runs unchanged on the artifact


def test_periodic_onnx_artifact_through_ase_matches_eager_and_its_supercell(periodic_onnx, periodic_checkpoint):
    cell = rattled_cu()
    atoms = cell.copy()
    atoms.calc = DeployccCalculator(periodic_onnx)
    eager = load(periodic_checkpoint)
    e_eager, f_eager, s_eager = eager.evaluate([cell])
    assert atoms.get_potential_energy() == pytest.approx(e_eager[0], abs=1e-4)
    np.testing.assert_allclose(atoms.get_forces(), f_eager[0], atol=1e-4)
    voigt = atoms.get_stress()  # ASE order xx yy zz yz xz xy, from the ONNX graph's virials
    assert np.abs(voigt).max() > 1e-3
    np.testing.assert_allclose(voigt[:3], np.diag(s_eager[0]), atol=1e-6)
    np.testing.assert_allclose(voigt[3:], [s_eager[0][1, 2], s_eager[0][0, 2], s_eager[0][0, 1]], atol=1e-6)
    np.testing.assert_allclose(atoms.get_stress(voigt=False), s_eager[0], atol=1e-6)
    supercell = cell.repeat((2, 2, 2))
    supercell.calc = DeployccCalculator(periodic_onnx)
    assert supercell.get_potential_energy() == pytest.approx(8 * e_eager[0], rel=1e-5)
    np.testing.assert_allclose(supercell.get_forces(), np.tile(f_eager[0], (8, 1)), atol=1e-4)
    np.testing.assert_allclose(supercell.get_stress(), voigt, atol=1e-6)  # intensive


def test_stress_uses_the_cell_as_given_and_is_absent_without_periodic_axes(periodic_onnx):
    """A slab's virial is divided by its full cell volume, vacuum included, as ASE's own calculators do."""
    calc = DeployccCalculator(periodic_onnx)
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=4.0)
    slab.pbc = (True, True, False)
    thicker = slab.copy()
    thicker.center(vacuum=8.0, axis=2)  # the same slab in a taller cell
    slab.calc = calc
    first = slab.get_stress(voigt=False)
    thicker.calc = DeployccCalculator(calc.predictor)  # a shared, thread-safe Predictor
    ratio = thicker.get_volume() / slab.get_volume()
    np.testing.assert_allclose(first, thicker.get_stress(voigt=False) * ratio, atol=1e-9)
    assert np.abs(first).max() > 1e-4
    molecule = Atoms("Cu2", positions=[[0, 0, 0], [2.4, 0, 0]])
    molecule.calc = DeployccCalculator(calc.predictor)
    assert np.isfinite(molecule.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError):
        molecule.get_stress()


def test_a_molecular_model_gives_stress_for_a_periodic_cell(tiny_checkpoint):
    cell = rattled_cu()
    cell.calc = DeployccCalculator(tiny_checkpoint, unseen_elements="allow")
    _, _, stresses = load(tiny_checkpoint, unseen_elements="allow").evaluate([rattled_cu()])
    np.testing.assert_allclose(cell.get_stress(voigt=False), stresses[0], atol=1e-7)
    assert np.abs(stresses[0]).max() > 1e-3


def test_cell_relaxation_with_the_shipped_metals_preset():
    """FrechetCellFilter + BFGS on stress and forces: the relaxed Cu lattice constant lands near EMT's, the
    teacher metals-tiny was distilled from."""
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


# --- what triggers a calculation --------------------------------------------------------------------------------


def counted(calc: DeployccCalculator) -> list[int]:
    calls: list[int] = []
    run = calc.predictor.run
    calc.predictor.run = lambda batch, *rest: calls.append(batch.atoms) or run(batch, *rest)
    return calls


def test_calculator_recomputes_exactly_when_the_model_inputs_change(tiny_checkpoint):
    """check_state compares numbers, positions, cell and pbc exactly; other arrays (charges) don't matter."""
    calc = DeployccCalculator(load(tiny_checkpoint))
    calls = counted(calc)
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
    np.testing.assert_allclose(longer.get_forces(), load(tiny_checkpoint).predict([longer])[1][0], atol=1e-6)


@pytest.mark.parametrize("periodic", [False, True])
def test_the_verlet_skin_reuses_the_list_until_an_atom_moves_half_of_it(periodic, tiny_checkpoint,
                                                                        periodic_checkpoint):
    skin = 0.8
    source = periodic_checkpoint if periodic else tiny_checkpoint
    start = rattled_cu().repeat((2, 1, 1)) if periodic else Atoms(*random_molecule(np.random.default_rng(5), 40))
    with_skin = DeployccCalculator(source, skin=skin)
    plain = DeployccCalculator(load(source))
    assert with_skin.neighbours.skin == skin and plain.neighbours.skin == 0.0
    rng = np.random.default_rng(6)
    atoms = start.copy()
    for step in range(5):
        atoms = atoms.copy()
        if step:
            atoms.positions = start.positions + rng.uniform(-1, 1, start.positions.shape) * 0.28 * skin / np.sqrt(3)
        reference = atoms.copy()
        atoms.calc, reference.calc = with_skin, plain
        assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=2e-5)
        np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=2e-5)
        if periodic:
            np.testing.assert_allclose(atoms.get_stress(), reference.get_stress(), atol=1e-6)
    assert with_skin.neighbours.builds == 1 and plain.neighbours.builds == 5
    assert with_skin.neighbours.batch.degree.sum() > plain.neighbours.batch.degree.sum()  # cutoff + skin
    atoms = atoms.copy()
    atoms.positions = start.positions
    atoms.positions[0] += [0.6 * skin, 0, 0]  # past skin/2: rebuilt
    atoms.calc = with_skin
    reference = atoms.copy()
    reference.calc = plain
    assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=2e-5)
    assert with_skin.neighbours.builds == 2


# --- refusals ------------------------------------------------------------------------------------------------


def test_bad_structures_are_refused_with_one_line(eager_artifact):
    calc = DeployccCalculator(eager_artifact)
    grid = np.stack(np.meshgrid(*[np.arange(-6, 7)] * 3), -1).reshape(-1, 3) * 0.9
    images = int(((np.linalg.norm(grid, axis=1) < 5.0) & (np.linalg.norm(grid, axis=1) > 0)).sum())
    assert images > 512
    for atoms, fragment in [
        (Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [0, 0, 0]]),
         "the structure (H2O) has atoms 0 and 2 0 Å apart, closer than the 0.5 Å tiny-test/eager accepts"),
        (Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]]), "the structure (H2) has NaN or infinite positions"),
        (Atoms(numbers=[1, 0], positions=[[0, 0, 0], [1, 0, 0]]), "atomic number 0 outside 1..100"),
        (Atoms("H", cell=[0.9, 0.9, 0.9], pbc=True),  # its own images, 0.9 Å apart: many within the cutoff
         f"the structure (H): atom 0 has {images} neighbours within 5 Å; tiny-test/eager holds at most 512 "
         "(its neighbours profile)"),
    ]:
        atoms.calc = calc
        with pytest.raises(UserInputError) as info:
            atoms.get_potential_energy()
        assert fragment in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_refused_structure_stays_refused_with_a_skin(tiny_checkpoint):
    calc = DeployccCalculator(tiny_checkpoint, skin=1.0)
    atoms = Atoms("CC", positions=[[0, 0, 0], [0.3, 0, 0]])
    atoms.calc = calc
    for _ in range(2):  # the second call finds the same positions: its list must not count as checked
        with pytest.raises(UserInputError, match="closer than the 0.5 Å"):
            atoms.get_potential_energy()


def test_atoms_closing_in_between_rebuilds_are_refused(tiny_checkpoint):
    """With a skin the list is reused, but the minimum distance is checked at every call's positions."""
    calc = DeployccCalculator(tiny_checkpoint, skin=1.0)
    atoms = Atoms("CH", positions=[[0, 0, 0], [0.75, 0, 0]])
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy())
    atoms.positions[1, 0] = 0.35  # moved 0.4 Å < skin / 2: no rebuild
    with pytest.raises(UserInputError, match=r"the structure \(CH\) has atoms 0 and 1 0.35 Å apart"):
        atoms.get_potential_energy()
    assert calc.neighbours.builds == 1


def test_a_structure_above_the_memory_budget_is_refused(tiny_checkpoint):
    predictor = load(tiny_checkpoint, memory_budget=1e6)
    atoms = Atoms(*random_molecule(np.random.default_rng(7), 5))
    atoms.calc = DeployccCalculator(predictor)
    need = predictor.settings.memory.estimate(5, 4) / 1e9
    with pytest.raises(UserInputError, match=rf"^the structure \(\w+\) \(5 atoms, 4 neighbours per atom\) needs an "
                                             rf"estimated {need:.3g} GB, above the 0.001 GB memory budget"):
        atoms.get_potential_energy()


def test_unseen_elements_policy_and_skin_validation(tiny_checkpoint):
    hf = Atoms("HF", positions=[[0, 0, 0], [0.92, 0, 0]])
    hf.calc = DeployccCalculator(tiny_checkpoint)
    with pytest.warns(UnseenElementWarning, match=r"the structure \(HF\) contains F"):
        hf.get_potential_energy()
    hf.calc = DeployccCalculator(tiny_checkpoint, unseen_elements="refuse")
    with pytest.raises(UserInputError, match=r"F \(Z=9\)"):
        hf.get_potential_energy()
    hf.calc = DeployccCalculator(tiny_checkpoint, unseen_elements="allow")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(hf.get_potential_energy())
    with pytest.raises(UserInputError, match="skin must be >= 0"):
        DeployccCalculator(tiny_checkpoint, skin=-1.0)
    with pytest.raises(UserInputError, match="unseen_elements must be one of"):
        DeployccCalculator(tiny_checkpoint, unseen_elements="maybe")


def test_a_second_thread_is_refused_and_each_thread_may_have_its_own(tiny_checkpoint):
    predictor = load(tiny_checkpoint)
    shared = DeployccCalculator(predictor)
    mine = Atoms(*random_molecule(np.random.default_rng(8), 4))
    mine.calc = shared
    energy = mine.get_potential_energy()
    outcome: dict[str, object] = {}

    def other_thread() -> None:
        theirs = mine.copy()
        theirs.positions[0] += 0.1
        theirs.calc = shared
        try:
            theirs.get_potential_energy()
        except UserInputError as exc:
            outcome["error"] = str(exc)
        own = mine.copy()
        own.calc = DeployccCalculator(predictor)  # its own calculator over the same Predictor
        outcome["energy"] = own.get_potential_energy()

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join(60)
    assert outcome["error"] == ("a DeployccCalculator is used by a second thread; give each thread its own "
                                "calculator (they may share one Predictor)")
    assert outcome["energy"] == pytest.approx(energy, abs=1e-9)
    mine.positions[1] += 0.05
    assert np.isfinite(mine.get_potential_energy())  # the owner thread still may


def test_calculator_results_carry_stress_only_when_finite():
    forces = np.zeros((2, 3))
    assert set(calculator_results(1.0, forces, None)) == {"energy", "free_energy", "forces"}
    assert "stress" not in calculator_results(1.0, forces, np.full((3, 3), np.nan))
    stress = np.arange(9.0).reshape(3, 3)
    stress = stress + stress.T
    np.testing.assert_array_equal(calculator_results(1.0, forces, stress)["stress"],
                                  [0, 8, 16, 12, 8, 4])


def test_threads_racing_for_one_calculator_never_disturb_its_owner(tiny_checkpoint):
    """Four threads start at once on one calculator, each with its own molecule: exactly one owns it and
    always gets its own molecule's result; the others are refused before they can reset the owner's state."""
    predictor = load(tiny_checkpoint)
    rng = np.random.default_rng(3)
    shapes = [3, 4, 5, 6]
    molecules = [Atoms(*random_molecule(rng, n)) for n in shapes]
    expected = []
    for atoms in molecules:
        probe = atoms.copy()
        probe.calc = DeployccCalculator(predictor)
        expected.append(probe.get_forces())
    for trial in range(20):
        shared = DeployccCalculator(predictor)
        start = threading.Barrier(len(molecules))
        outcomes: list[list[object]] = [[] for _ in molecules]

        def work(k: int) -> None:
            atoms = molecules[k].copy()
            atoms.calc = shared
            start.wait()
            for step in range(10):
                atoms.positions[0, 0] += 1e-4 * (-1) ** step  # a new calculation every call
                try:
                    outcomes[k].append(atoms.get_forces().shape)
                except UserInputError as exc:
                    outcomes[k].append(str(exc))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(molecules))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        owners = [k for k, got in enumerate(outcomes) if any(isinstance(x, tuple) for x in got)]
        assert len(owners) == 1, (trial, outcomes)
        owner = owners[0]
        assert outcomes[owner] == [(shapes[owner], 3)] * 10, (trial, outcomes[owner])
        for k, got in enumerate(outcomes):
            if k != owner:
                assert all("used by a second thread" in str(x) for x in got), (trial, got)
