"""Property-based tests (hypothesis) over random structures: sizes, elements, geometries, periodic cells,
batch company, memory budgets.

* the eager and ONNX Runtime artifacts agree with the eager reference within their targets' tolerances
  (`Target.settings("cpu").tolerances`) and never give NaN on valid input, molecules and periodic cells alike;
* a structure gives the same result alone as inside a batch of others (whose slot width M differs);
* the API's results are finite, and splitting a request by any memory budget does not change them;
* invalid input (NaN/inf positions, Z out of range, no atoms, atoms or periodic images closer than 0.5 Å)
  always raises one line (UserInputError, exit code 65) naming its index, never another exception; through
  the command line it is one `error:` line, exit 65, no traceback, no output file.

Deterministic: derandomized, no example database.
"""

from __future__ import annotations

import copy
import sys

import ase.io
import numpy as np
import pytest
from ase import Atoms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploycc.api import Predictor, load
from deploycc.checkpoint import load_checkpoint
from deploycc.cli import main
from deploycc.errors import UserInputError
from deploycc.parity import FLOAT32_ULP
from deploycc.runtime.neighbours import Structure, half_list, neighbour_batch
from deploycc.runtime.validate import Rules
from deploycc.targets.base import get_target
from deploycc.targets.eager import eager_runner

CPU_TARGETS = ("eager", "onnx")
CALIB_ELEMENTS = (1, 6, 7, 8, 9, 15, 16, 17)  # H C N O F P S Cl: the calibration set's elements
METALS = (13, 29, 47, 79)
MIN_DISTANCE = 0.7  # Angstrom: closer pairs are not valid structures here (the runtime refuses < 0.5)

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# --- strategies --------------------------------------------------------------------------------------------


def place_atoms(n: int, spread: float, seed: int) -> np.ndarray:
    """n points, every pair at least MIN_DISTANCE apart, in a box whose side grows with n and `spread`
    (dense clusters to sparse ones with pairs beyond the 5 Angstrom cutoff)."""
    rng = np.random.default_rng(seed)
    box = max(spread * max(n, 2) ** (1 / 3), 1.0)
    points: list[np.ndarray] = []
    while len(points) < n:
        candidate = rng.uniform(-box / 2, box / 2, 3)
        if all(np.linalg.norm(candidate - p) >= MIN_DISTANCE for p in points):
            points.append(candidate)
        else:
            box *= 1.002  # never stalls: a crowded box slowly grows
    offset = rng.uniform(-50.0, 50.0, 3)  # absolute position must not matter
    return np.array(points) + offset


@st.composite
def molecules(draw, max_atoms: int = 30) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, max_atoms))
    numbers = np.array(draw(st.lists(st.sampled_from(CALIB_ELEMENTS), min_size=n, max_size=n)), dtype=np.int64)
    spread = draw(st.floats(1.0, 4.0))
    positions = place_atoms(n, spread, draw(st.integers(0, 2**31 - 1)))
    return numbers, positions


def place_in_cell(n: int, cell: np.ndarray, pbc: np.ndarray, seed: int) -> np.ndarray:
    """n points in `cell`, every pair (periodic images included) at least MIN_DISTANCE apart."""
    rng = np.random.default_rng(seed)
    images = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)
    images = images[np.all((images == 0) | pbc[None, :], axis=1)] @ cell
    points: list[np.ndarray] = []
    attempts = 0
    while len(points) < n and attempts < 20000:
        attempts += 1
        candidate = rng.uniform(0, 1, 3) @ cell
        if all(np.linalg.norm(candidate + shift - p) >= MIN_DISTANCE for p in points for shift in images):
            points.append(candidate)
    return np.array(points).reshape(-1, 3)


@st.composite
def periodic_cells(draw) -> Structure:
    """Small cells (3-6 Å lattice vectors, so many images), triclinic, periodic in 1-3 directions."""
    lengths = np.array([draw(st.floats(3.0, 6.0)) for _ in range(3)])
    shear = np.array([[0, 0, 0], [draw(st.floats(-0.3, 0.3)), 0, 0],
                      [draw(st.floats(-0.3, 0.3)), draw(st.floats(-0.3, 0.3)), 0]])
    cell = (np.eye(3) + shear) * lengths[:, None]
    pbc = np.array(draw(st.sampled_from([(True, True, True), (True, True, False), (False, False, True)])))
    n = draw(st.integers(1, 8))
    positions = place_in_cell(n, cell, pbc, draw(st.integers(0, 2**31 - 1)))
    numbers = np.array(draw(st.lists(st.sampled_from(METALS), min_size=len(positions), max_size=len(positions))))
    return Structure.of(numbers, positions, cell, pbc)


def as_structures(mols) -> list[Structure]:
    return [Structure.of(z, r) for z, r in mols]


# --- runners, built once -----------------------------------------------------------------------------------


def exported_runners(checkpoint_path, tmp_path_factory, tag: str):
    """Eager reference plus an exported and reloaded runner per available CPU target, with its tolerances."""
    model = load_checkpoint(checkpoint_path).model
    out = {}
    for name in CPU_TARGETS:
        target = get_target(name)
        target_settings = target.settings("cpu")
        if target.availability(target_settings) is not None:
            continue
        exported = target.export(copy.deepcopy(model), target_settings, tmp_path_factory.mktemp(f"fuzz-{tag}-{name}"))
        out[name] = (target.runner(exported.path, target_settings), target_settings.tolerances)
    assert set(out) == set(CPU_TARGETS)
    return eager_runner(copy.deepcopy(model), "cpu"), out


@pytest.fixture(scope="module")
def runners(tiny_checkpoint, tmp_path_factory):
    return exported_runners(tiny_checkpoint, tmp_path_factory, "tiny")


@pytest.fixture(scope="module")
def periodic_runners(periodic_checkpoint, tmp_path_factory):
    return exported_runners(periodic_checkpoint, tmp_path_factory, "metals")


def assert_agree(name: str, structures: list[Structure], ref, out, tol) -> None:
    sizes = np.array([len(s) for s in structures], dtype=np.float64)
    assert out.energies.shape == (len(structures),) and out.forces.shape == (int(sizes.sum()), 3), name
    assert np.isfinite(out.energies).all() and np.isfinite(out.forces).all(), f"{name}: NaN/inf on valid input"
    assert np.isfinite(out.virials).all(), f"{name}: NaN/inf virials"
    allowed = tol.energy_per_atom_abs + 4 * FLOAT32_ULP * np.abs(ref.energies) / sizes
    per_atom = np.abs(out.energies - ref.energies) / sizes
    assert (per_atom <= allowed).all(), f"{name}: energy/atom error {per_atom.max():.3g} eV"
    diff = out.forces - ref.forces
    max_abs = np.abs(diff).max()
    rel = np.sqrt(np.mean(diff**2)) / max(np.sqrt(np.mean(ref.forces**2)), 1e-12)
    assert max_abs <= tol.forces_abs or rel <= tol.forces_rel, f"{name}: forces {max_abs:.3g} / rel {rel:.3g}"
    for k, s in enumerate(structures):
        if s.periodic:
            error = np.abs(out.virials[k] - ref.virials[k]).max() / len(s)
            assert error <= tol.virial_per_atom_abs, f"{name}: virial/atom error {error:.3g} eV"


# --- properties --------------------------------------------------------------------------------------------


@FUZZ
@given(batch=st.lists(molecules(), min_size=1, max_size=6))
def test_cpu_targets_agree_with_eager_on_random_batches(runners, batch):
    reference, targets = runners
    structures = as_structures(batch)
    inputs = neighbour_batch(structures, 5.0)
    ref = reference.infer(inputs)
    assert np.isfinite(ref.energies).all() and np.isfinite(ref.forces).all()
    for name, (runner, tol) in targets.items():
        assert_agree(name, structures, ref, runner.infer(inputs), tol)


@FUZZ
@given(batch=st.lists(periodic_cells(), min_size=1, max_size=3), molecule=st.one_of(st.none(), molecules(8)))
def test_cpu_targets_agree_with_eager_on_random_periodic_cells(periodic_runners, batch, molecule):
    reference, targets = periodic_runners
    structures = batch + ([] if molecule is None else as_structures([molecule]))
    inputs = neighbour_batch(structures, 5.0)
    ref = reference.infer(inputs)
    assert np.isfinite(ref.energies).all() and np.isfinite(ref.virials).all()
    for name, (runner, tol) in targets.items():
        assert_agree(name, structures, ref, runner.infer(inputs), tol)


@FUZZ
@given(mol=molecules(), company=st.lists(molecules(max_atoms=12), max_size=3),
       cell=st.one_of(st.none(), periodic_cells()))
def test_batch_company_does_not_change_a_structure(runners, mol, company, cell):
    """One structure alone == the same structure inside a batch of others, whose slot width M differs (eager)."""
    reference, targets = runners
    tol = targets["eager"][1]
    alone = as_structures([mol])
    structures = as_structures(company) + ([cell] if cell is not None else []) + alone
    single = reference.infer(neighbour_batch(alone, 5.0))
    together = neighbour_batch(structures, 5.0)
    batched = reference.infer(together)
    n = len(mol[0])
    e1, eb = single.energies[0], batched.energies[-1]
    assert abs(eb - e1) / n <= tol.energy_per_atom_abs + 4 * FLOAT32_ULP * abs(e1) / n
    np.testing.assert_allclose(batched.forces_of(len(structures) - 1), single.forces_of(0), atol=tol.forces_abs)


KINDS = ("nan", "inf", "z-low", "z-high", "empty", "coincident", "too-close", "image-too-close")


def corrupt(draw, kind: str, numbers: np.ndarray, positions: np.ndarray, max_z: int, highest: int = 300
            ) -> tuple[Atoms, str]:
    numbers, positions = numbers.copy(), positions.copy()
    if kind == "empty":
        return Atoms(), "has no atoms"
    if kind == "image-too-close":  # a periodic axis shorter than the minimum distance: an atom meets its image
        length = draw(st.floats(0.05, 0.49))
        cell = np.diag([length, 30.0, 30.0])
        return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=[True, False, False]), \
            "(periodic images)"
    atom = draw(st.integers(0, len(numbers) - 1))
    if kind in ("nan", "inf"):
        axis = draw(st.integers(0, 2))
        positions[atom, axis] = np.nan if kind == "nan" else draw(st.sampled_from([np.inf, -np.inf]))
        return Atoms(numbers=numbers, positions=positions), "NaN or infinite"
    if kind == "z-low":
        numbers[atom] = draw(st.integers(-5, 0))
        return Atoms(numbers=numbers, positions=positions), "outside 1.."
    if kind == "z-high":
        numbers[atom] = draw(st.integers(max_z + 1, highest))
        return Atoms(numbers=numbers, positions=positions), "outside 1.."
    if len(numbers) == 1:  # needs two atoms: add a copy of the only one
        numbers, positions = np.repeat(numbers, 2), np.repeat(positions, 2, axis=0)
        other = 1
    else:
        other = draw(st.integers(0, len(numbers) - 2))
        other = other + 1 if other >= atom else other
    if kind == "coincident":
        positions[other] = positions[atom]
    else:
        direction = np.array([draw(st.floats(-1, 1)) for _ in range(3)]) + [1e-3, 0, 0]
        positions[other] = positions[atom] + direction / np.linalg.norm(direction) * draw(st.floats(0.0, 0.49))
    return Atoms(numbers=numbers, positions=positions), "closer than the 0.5 Å"


@st.composite
def invalid_requests(draw, kind: str, max_z: int = 100, highest: int = 300) -> tuple[list[Atoms], int, str]:
    good = [Atoms(numbers=z, positions=r) for z, r in draw(st.lists(molecules(max_atoms=10), max_size=3))]
    numbers, positions = draw(molecules(max_atoms=10))
    bad, message = corrupt(draw, kind, numbers, positions, max_z, highest)
    where = draw(st.integers(0, len(good)))
    return good[:where] + [bad] + good[where:], where, message


@pytest.fixture(scope="module")
def predictor(runners) -> Predictor:
    _, targets = runners
    onnx = get_target("onnx")
    return Predictor(targets["onnx"][0], onnx.settings("cpu"),
                     Rules.make("fuzz/onnx", 100, 5.0, unseen_elements="allow", max_slots=512))


@pytest.mark.parametrize("kind", KINDS)
@settings(FUZZ, max_examples=10)
@given(data=st.data())
def test_invalid_input_always_raises_one_line_user_error(predictor, kind, data):
    atoms_list, where, fragment = data.draw(invalid_requests(kind))
    with pytest.raises(UserInputError) as info:  # any other exception type fails the test
        predictor.predict(atoms_list)
    message = str(info.value)
    assert info.value.exit_code == 65
    assert "\n" not in message and fragment in message and message.startswith(f"structure {where}"), message


@pytest.mark.parametrize("kind", KINDS)
@settings(FUZZ, max_examples=3)
@given(data=st.data())
def test_invalid_input_through_the_cli_is_one_line_exit_65(tiny_checkpoint, tmp_path, monkeypatch, capsys, kind,
                                                            data):
    atoms_list, where, fragment = data.draw(invalid_requests(kind, highest=118))  # extxyz has symbols to 118
    source, out = tmp_path / "in.extxyz", tmp_path / "out.extxyz"
    ase.io.write(source, atoms_list, format="extxyz")
    monkeypatch.setattr(sys, "argv", ["deploycc", "predict", str(tiny_checkpoint), "--structures", str(source),
                                      "--out", str(out), "--unseen-elements", "allow"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # any other exception is a traceback: the test fails
        main()
    captured = capsys.readouterr()
    assert info.value.code == 65, captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {source}: structure {where}") and fragment in lines[0], lines
    assert "Traceback" not in captured.out + captured.err
    assert not out.exists() and not list(tmp_path.glob(".out.extxyz.tmp-*"))


@FUZZ
@given(batch=st.lists(molecules(max_atoms=20), min_size=1, max_size=9), fraction=st.floats(0.0, 1.0))
def test_api_on_valid_input_is_finite_and_any_memory_budget_gives_the_same_results(tiny_checkpoint, batch,
                                                                                     fraction):
    whole = load(tiny_checkpoint, unseen_elements="allow", memory_budget=1e15)
    atoms = [Atoms(numbers=z, positions=r) for z, r in batch]
    energies, forces, stresses = whole.evaluate(atoms)
    assert np.isfinite(energies).all() and all(np.isfinite(f).all() for f in forces)
    assert [f.shape for f in forces] == [(len(a), 3) for a in atoms] and np.isnan(stresses).all()
    memory = whole.settings.memory
    widths = [max(int(half_list(Structure.of(z, r), 5.0).degree(len(z)).max(initial=0)), 1) for z, r in batch]
    largest = max(memory.estimate(len(z), m) for (z, _), m in zip(batch, widths))
    everything = memory.estimate(sum(len(z) for z, _ in batch), max(widths))
    budget = largest + fraction * (everything - largest)
    split = load(tiny_checkpoint, unseen_elements="allow", memory_budget=budget)
    calls: list[tuple[int, int]] = []
    inner = split.runner

    class Counting:
        def infer(self, inputs):
            calls.append((inputs.atoms, inputs.slots))
            return inner.infer(inputs)

    split.runner = Counting()
    split_e, split_f = split.predict(atoms)
    assert all(memory.estimate(a, m) <= budget for a, m in calls)
    assert sum(a for a, _ in calls) == sum(len(a) for a in atoms)
    sizes = np.array([len(a) for a in atoms])
    assert (np.abs(split_e - energies) / sizes <= 5e-5 + 4 * FLOAT32_ULP * np.abs(energies) / sizes).all()
    for a, b in zip(forces, split_f):
        np.testing.assert_allclose(a, b, atol=5e-4)


def test_strategies_make_valid_structures():
    """The generators themselves: molecules up to 30 atoms and cells with every pair (images included) at
    least 0.7 Angstrom apart."""
    for seed in range(20):
        positions = place_atoms(30, 1.0, seed)
        d = np.linalg.norm(positions[:, None] - positions[None], axis=-1) + np.eye(30) * 99
        assert d.min() >= MIN_DISTANCE
    cell = np.array([[3.0, 0, 0], [0.9, 3.0, 0], [-0.9, 0.9, 3.0]])
    for seed in range(5):
        positions = place_in_cell(8, cell, np.array([True, True, True]), seed)
        structure = Structure.of(np.full(len(positions), 29), positions, cell, True)
        half = half_list(structure, MIN_DISTANCE - 1e-9)
        assert len(positions) >= 4 and len(half.i) == 0
