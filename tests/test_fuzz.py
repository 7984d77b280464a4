"""Property-based tests (hypothesis) over random structures: sizes, elements, geometries, padding, batches.

* every CPU target (eager, TorchScript, ONNX Runtime) agrees with eager within its targets/<name>.toml
  tolerances, gives zero force on padding and never NaN on valid input;
* invalid input (NaN/inf positions, Z out of range, no atoms, coincident atoms) given to `deploycc.api`
  always raises UserInputError with one line, never another exception.

Deterministic: derandomized, no example database.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from ase import Atoms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploycc.api import Predictor, load
from deploycc.batching import pad
from deploycc.checkpoint import load_checkpoint
from deploycc.errors import UserInputError
from deploycc.parity import FLOAT32_ULP
from deploycc.pipeline import resolve_settings
from deploycc.targets.base import open_runner, registered
from deploycc.targets.eager import EagerRunner

CPU_TARGETS = ("eager", "torchscript", "onnx")
CALIB_ELEMENTS = (1, 6, 7, 8, 9, 15, 16, 17)  # H C N O F P S Cl: the calibration set's elements
MIN_DISTANCE = 0.7  # Angstrom: closer pairs are not valid molecules here

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


@st.composite
def batches(draw) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    mols = draw(st.lists(molecules(), min_size=1, max_size=6))
    extra_padding = draw(st.integers(0, 8))
    return [m[0] for m in mols], [m[1] for m in mols], extra_padding


# --- runners, built once -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runners(tiny_checkpoint, tmp_path_factory):
    """Eager reference plus a reloaded artifact runner per available CPU target, with its tolerances."""
    model = load_checkpoint(tiny_checkpoint).model
    out = {}
    for name in CPU_TARGETS:
        target = registered()[name]
        target_settings = resolve_settings(name, "cpu")
        if target.availability(target_settings) is not None:
            continue
        exported = target.export(copy.deepcopy(model), target_settings, tmp_path_factory.mktemp(f"fuzz-{name}"))
        out[name] = (open_runner(target, exported.path, target_settings), target_settings.tolerances)
    assert "eager" in out and "torchscript" in out
    return EagerRunner(copy.deepcopy(model), "cpu"), out


def as_numpy(result) -> tuple[np.ndarray, np.ndarray]:
    energy, forces = result
    return energy.detach().double().cpu().numpy(), forces.detach().double().cpu().numpy()


# --- properties --------------------------------------------------------------------------------------------


@FUZZ
@given(batch=batches())
def test_cpu_targets_agree_with_eager_on_random_batches(runners, batch):
    reference, targets = runners
    numbers, positions, extra = batch
    width = max(len(z) for z in numbers) + extra
    z, r = pad(numbers, positions, n_atoms=width)
    e_ref, f_ref = as_numpy(reference.predict(z, r))
    assert np.isfinite(e_ref).all() and np.isfinite(f_ref).all()
    sizes = np.array([len(k) for k in numbers])
    for name, (runner, tol) in targets.items():
        e_out, f_out = as_numpy(runner.predict(z, r))
        assert e_out.shape == (len(numbers),) and f_out.shape == (len(numbers), width, 3), name
        assert np.isfinite(e_out).all() and np.isfinite(f_out).all(), f"{name}: NaN/inf on valid input"
        allowed = tol.energy_per_atom_abs + 4 * FLOAT32_ULP * np.abs(e_ref) / sizes
        per_atom = np.abs(e_out - e_ref) / sizes
        assert (per_atom <= allowed).all(), f"{name}: energy/atom error {per_atom.max():.3g} eV"
        real = np.concatenate([f_out[k, :n] - f_ref[k, :n] for k, n in enumerate(sizes)])
        ref_forces = np.concatenate([f_ref[k, :n] for k, n in enumerate(sizes)])
        max_abs = np.abs(real).max()
        rel = np.sqrt(np.mean(real**2)) / max(np.sqrt(np.mean(ref_forces**2)), 1e-12)
        assert max_abs <= tol.forces_abs or rel <= tol.forces_rel, f"{name}: forces {max_abs:.3g} / rel {rel:.3g}"
        padded = np.concatenate([f_out[k, n:].ravel() for k, n in enumerate(sizes)])
        assert np.abs(padded).max(initial=0.0) <= tol.forces_abs, f"{name}: force on padding"


@FUZZ
@given(mol=molecules(), extra=st.integers(1, 10), neighbours=st.lists(molecules(max_atoms=12), max_size=3))
def test_padding_and_batch_company_do_not_change_a_structure(runners, mol, extra, neighbours):
    """One structure alone and unpadded == the same structure padded inside a batch of others (eager)."""
    reference, targets = runners
    tol = targets["eager"][1]
    z1, r1 = pad([mol[0]], [mol[1]])
    e1, f1 = as_numpy(reference.predict(z1, r1))
    numbers = [n for n, _ in neighbours] + [mol[0]]
    positions = [p for _, p in neighbours] + [mol[1]]
    width = max(len(z) for z in numbers) + extra
    zb, rb = pad(numbers, positions, n_atoms=width)
    eb, fb = as_numpy(reference.predict(zb, rb))
    n = len(mol[0])
    assert abs(eb[-1] - e1[0]) / n <= tol.energy_per_atom_abs + 4 * FLOAT32_ULP * abs(e1[0]) / n
    np.testing.assert_allclose(fb[-1, :n], f1[0], atol=tol.forces_abs)
    assert np.abs(fb[-1, n:]).max() <= tol.forces_abs


def corrupt(draw, numbers: np.ndarray, positions: np.ndarray, max_z: int) -> tuple[Atoms, str]:
    kind = draw(st.sampled_from(["nan", "inf", "z-low", "z-high", "empty", "coincident"]))
    numbers, positions = numbers.copy(), positions.copy()
    if kind == "empty":
        return Atoms(), "no atoms"
    atom = draw(st.integers(0, len(numbers) - 1))
    if kind in ("nan", "inf"):
        axis = draw(st.integers(0, 2))
        positions[atom, axis] = np.nan if kind == "nan" else draw(st.sampled_from([np.inf, -np.inf]))
        return Atoms(numbers=numbers, positions=positions), "NaN or infinite"
    if kind == "z-low":
        numbers[atom] = draw(st.integers(-5, 0))
        return Atoms(numbers=numbers, positions=positions), "outside 1.."
    if kind == "z-high":
        numbers[atom] = draw(st.integers(max_z + 1, 300))
        return Atoms(numbers=numbers, positions=positions), "outside 1.."
    if len(numbers) == 1:  # coincident needs two atoms: add a copy of the only one
        numbers, positions = np.repeat(numbers, 2), np.repeat(positions, 2, axis=0)
        other = 1
    else:
        other = draw(st.integers(0, len(numbers) - 2))
        other = other + 1 if other >= atom else other
    positions[other] = positions[atom] + draw(st.floats(-3e-4, 3e-4))
    return Atoms(numbers=numbers, positions=positions), "at the same position"


@st.composite
def invalid_requests(draw, max_z: int = 100) -> tuple[list[Atoms], int, str]:
    good = [Atoms(numbers=z, positions=r) for z, r in draw(st.lists(molecules(max_atoms=10), max_size=3))]
    numbers, positions = draw(molecules(max_atoms=10))
    bad, message = corrupt(draw, numbers, positions, max_z)
    where = draw(st.integers(0, len(good)))
    return good[:where] + [bad] + good[where:], where, message


@pytest.fixture(scope="module")
def predictor(runners) -> Predictor:
    _, targets = runners
    return Predictor(targets["torchscript"][0], max_batch=4, max_atoms=128, max_z=100, label="fuzz/torchscript")


@FUZZ
@given(request=invalid_requests())
def test_invalid_input_always_raises_one_line_user_error(predictor, request):
    atoms_list, where, fragment = request
    with pytest.raises(UserInputError) as info:  # any other exception type fails the test
        predictor.predict(atoms_list)
    message = str(info.value)
    assert "\n" not in message and fragment in message and f"structure {where}" in message, message


@FUZZ
@given(batch=st.lists(molecules(max_atoms=20), min_size=1, max_size=9), max_batch=st.integers(1, 4))
def test_api_on_valid_input_is_finite_and_split_batches_agree(tiny_checkpoint, batch, max_batch):
    predictor = load(tiny_checkpoint, unseen_elements="allow")
    atoms = [Atoms(numbers=z, positions=r) for z, r in batch]
    energies, forces = predictor.predict(atoms)
    assert np.isfinite(energies).all() and all(np.isfinite(f).all() for f in forces)
    assert [f.shape for f in forces] == [(len(a), 3) for a in atoms]
    predictor.max_batch = max_batch
    split_e, split_f = predictor.predict(atoms)
    sizes = np.array([len(a) for a in atoms])
    assert (np.abs(split_e - energies) / sizes <= 5e-5 + 4 * FLOAT32_ULP * np.abs(energies) / sizes).all()
    for a, b in zip(forces, split_f):
        np.testing.assert_allclose(a, b, atol=5e-4)


def test_strategies_make_valid_molecules():
    """The generator itself: sizes up to 30, calibration elements, every pair >= 0.7 Angstrom apart."""
    for seed in range(20):
        positions = place_atoms(30, 1.0, seed)
        d = np.linalg.norm(positions[:, None] - positions[None], axis=-1) + np.eye(30) * 99
        assert d.min() >= MIN_DISTANCE
