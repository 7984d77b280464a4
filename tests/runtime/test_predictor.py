"""deploycc.api.load() and the Predictor: batching by the atoms profile and a memory budget, stresses for
every structure with periodic axes, refusals (too large, non-finite results), thread safety."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111

from deploycc.api import Predictor, load, reference_predictor
from deploycc.build import build
from deploycc.checkpoint import save_checkpoint
from deploycc.errors import UserInputError
from deploycc.runtime.predictor import NonFiniteResultError, available_memory
from deploycc.targets.settings import Profile

from helpers import make_model, random_molecule


def molecules(count: int, seed: int = 3, low: int = 2, high: int = 14) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    return [Atoms(numbers=z, positions=r) for z, r in (random_molecule(rng, n) for n in rng.integers(low, high, count))]


@pytest.fixture(scope="module")
def artifact(tiny_checkpoint, calib_file, tmp_path_factory):
    return build(str(tiny_checkpoint), "eager", tmp_path_factory.mktemp("art"), calib=calib_file).folder


class CountingRunner:
    """Wraps a runner: records (atoms, slots) of every call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[tuple[int, int]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def infer(self, batch):
        self.calls.append((batch.atoms, batch.slots))
        return self.inner.infer(batch)


def assert_same_results(a, b, energy_atol: float = 1e-4, force_atol: float = 1e-5) -> None:
    np.testing.assert_allclose(a[0], b[0], rtol=0, atol=energy_atol)
    assert len(a[1]) == len(b[1])
    for x, y in zip(a[1], b[1]):
        np.testing.assert_allclose(x, y, rtol=0, atol=force_atol)


def test_checkpoint_predictor_matches_per_structure_calls(tiny_checkpoint):
    predictor = load(tiny_checkpoint)
    atoms = molecules(7)
    energies, forces = predictor.predict(atoms)
    assert energies.shape == (7,) and energies.dtype == np.float64
    for k, a in enumerate(atoms):
        e1, f1 = predictor.predict([a])
        assert energies[k] == pytest.approx(e1[0], abs=1e-4)
        assert forces[k].shape == (len(a), 3)
        np.testing.assert_allclose(forces[k], f1[0], atol=1e-5)
    assert np.abs(np.concatenate(forces)).max() > 1e-2  # not trivially zero


def test_artifact_predictor_equals_the_checkpoint_and_knows_its_rules(artifact, tiny_checkpoint):
    predictor = load(artifact)
    assert predictor.label == "tiny-test/eager"
    assert predictor.rules.max_slots == predictor.settings.neighbours.max
    assert predictor.elements == frozenset({1, 6, 7, 8}) and predictor.cutoff == 5.0
    atoms = molecules(5, seed=8)
    assert_same_results(predictor.predict(atoms), load(tiny_checkpoint).predict(atoms), 1e-6, 1e-6)
    reference = reference_predictor(artifact)
    assert reference.label == "tiny-test/eager" and reference.settings.device == "cpu"
    assert_same_results(reference.predict(atoms), load(tiny_checkpoint).predict(atoms), 1e-6, 1e-6)


def test_float64_reference_resolves_finite_differences_that_float32_cannot(artifact):
    """The double-precision path of an artifact's reference weights: central differences of its energy equal
    its forces to 1e-6 eV/Å, while the float32 energies of the same model miss them by far more."""
    atoms = molecules(1, seed=11, low=12, high=13)[0]
    exact = reference_predictor(artifact, dtype="float64")
    assert exact.label == "tiny-test/eager-float64"
    rough = reference_predictor(artifact)
    forces = exact.predict([atoms])[1][0]
    step = 1e-4
    errors64, errors32 = [], []
    for atom, axis in ((0, 0), (3, 1), (7, 2)):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[atom, axis] += step
        minus.positions[atom, axis] -= step
        for predictor, errors in ((exact, errors64), (rough, errors32)):
            e_plus, e_minus = predictor.predict([plus])[0][0], predictor.predict([minus])[0][0]
            errors.append(abs(-(e_plus - e_minus) / (2 * step) - forces[atom, axis]))
    assert max(errors64) <= 1e-6
    assert max(errors32) > 100 * max(errors64)
    with pytest.raises(UserInputError, match="float32' or 'float64"):
        reference_predictor(artifact, dtype="float16")


def test_stresses_for_every_periodic_structure_and_nan_for_molecules(tiny_checkpoint):
    """A molecular model takes periodic cells: stress is the strain derivative of the energy (ASE's sign)."""
    predictor = load(tiny_checkpoint, unseen_elements="allow")
    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    cell.rattle(0.05, seed=1)
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=4.0)
    slab.pbc = (True, True, False)
    mol = molecules(1)[0]
    energies, forces, stresses = predictor.evaluate([mol, cell, slab])
    assert stresses.shape == (3, 3, 3)
    assert np.isnan(stresses[0]).all()
    assert np.isfinite(stresses[1:]).all() and np.abs(stresses[1]).max() > 1e-3
    np.testing.assert_allclose(stresses[1], stresses[1].T, atol=1e-9)
    h, volume = 1e-3, cell.get_volume()
    for i, j in [(0, 0), (2, 2), (0, 1), (1, 2)]:
        values = []
        for sign in (1, -1):
            strain = np.zeros((3, 3))
            strain[i, j] = strain[j, i] = sign * h / (1 if i == j else 2)
            strained = cell.copy()
            strained.set_cell(cell.cell.array @ (np.eye(3) + strain), scale_atoms=True)
            values.append(predictor.predict([strained])[0][0])
        assert stresses[1][i, j] == pytest.approx((values[0] - values[1]) / (2 * h) / volume, abs=2e-5)
    alone = predictor.evaluate([cell])
    assert energies[1] == pytest.approx(alone[0][0], abs=1e-4)
    np.testing.assert_allclose(stresses[1], alone[2][0], atol=1e-7)
    empty = predictor.evaluate([])
    assert empty[0].shape == (0,) and empty[1] == [] and empty[2].shape == (0, 3, 3)


def test_a_periodic_model_takes_molecules(periodic_checkpoint):
    predictor = load(periodic_checkpoint)
    cluster = Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0]])
    energies, forces, stresses = predictor.evaluate([cluster])
    assert np.isfinite(energies).all() and np.abs(forces[0]).max() > 1e-3 and np.isnan(stresses).all()
    np.testing.assert_allclose(forces[0].sum(0), 0.0, atol=1e-5)  # no external force on an isolated cluster


# --- calls sized by the atoms profile and the memory budget -----------------------------------------------------


def test_requests_are_split_by_the_memory_budget(tiny_checkpoint):
    atoms = molecules(12, seed=5, low=4, high=16)
    whole = load(tiny_checkpoint, memory_budget=1e12)
    counting = CountingRunner(whole.runner)
    whole.runner = counting
    reference = whole.predict(atoms)
    assert len(counting.calls) == 1
    memory = whole.settings.memory
    budget = memory.estimate(40, 15)  # room for about three of these molecules per call
    split = load(tiny_checkpoint, memory_budget=budget)
    assert split.budget() == budget
    counting = CountingRunner(split.runner)
    split.runner = counting
    result = split.predict(atoms)
    assert len(counting.calls) >= 3
    assert sum(a for a, _ in counting.calls) == sum(len(a) for a in atoms)
    assert all(memory.estimate(a, m) <= budget for a, m in counting.calls), counting.calls
    assert_same_results(result, reference)


def test_the_budget_comes_from_the_environment(tiny_checkpoint, monkeypatch):
    atoms = molecules(6, seed=6)
    predictor = load(tiny_checkpoint)
    budget = predictor.settings.memory.estimate(40, 10)  # above one molecule, below all six in one call
    monkeypatch.setenv("DEPLOYCC_MEMORY_BUDGET_GB", str(budget / 1e9))
    assert predictor.budget() == pytest.approx(budget) and available_memory("cpu") == pytest.approx(budget)
    counting = CountingRunner(predictor.runner)
    predictor.runner = counting
    energies, _ = predictor.predict(atoms)
    assert len(counting.calls) > 1 and np.isfinite(energies).all()
    assert all(predictor.settings.memory.estimate(a, m) <= budget for a, m in counting.calls)
    monkeypatch.setenv("DEPLOYCC_MEMORY_BUDGET_GB", "lots")
    with pytest.raises(UserInputError, match="DEPLOYCC_MEMORY_BUDGET_GB must be a number of GB, got 'lots'"):
        predictor.predict(atoms)
    monkeypatch.delenv("DEPLOYCC_MEMORY_BUDGET_GB")
    default = available_memory("cpu")
    with open("/proc/meminfo") as handle:
        total = int(handle.readline().split()[1]) * 1024
    assert 0 < default <= 0.5 * total


def test_a_structure_above_the_budget_is_refused_with_the_estimate_and_the_budget(tiny_checkpoint):
    atoms = molecules(3, seed=7, low=8, high=12)
    probe = load(tiny_checkpoint)
    sizes = [len(a) for a in atoms]
    need = [probe.settings.memory.estimate(n, n - 1) for n in sizes]  # small molecules: every pair is in range
    budget = (need[0] + need[1]) / 2 if need[0] > need[1] else min(need) * 0.999
    predictor = load(tiny_checkpoint, memory_budget=budget)
    counting = CountingRunner(predictor.runner)
    predictor.runner = counting
    with pytest.raises(UserInputError) as info:
        predictor.predict(atoms)
    message = str(info.value)
    k = next(k for k, value in enumerate(need) if value > budget)
    assert "\n" not in message and message.startswith(f"structure {k} (")
    assert f"({sizes[k]} atoms, {sizes[k] - 1} neighbours per atom) needs an estimated {need[k] / 1e9:.3g} GB, " \
           f"above the {budget / 1e9:.3g} GB memory budget of tiny-test/eager" in message
    assert "DEPLOYCC_MEMORY_BUDGET_GB" in message
    assert counting.calls == []  # refused before any call


def test_calls_respect_the_atoms_profile(tiny_checkpoint):
    predictor = load(tiny_checkpoint)
    predictor.settings = replace(predictor.settings, atoms=Profile(1, 8, 16))
    counting = CountingRunner(predictor.runner)
    predictor.runner = counting
    atoms = molecules(9, seed=9, low=2, high=12)
    result = predictor.predict(atoms)
    assert len(counting.calls) > 1 and all(a <= 16 for a, _ in counting.calls)
    assert_same_results(result, load(tiny_checkpoint).predict(atoms))
    big = Atoms(*random_molecule(np.random.default_rng(1), 17))
    with pytest.raises(UserInputError, match=r"^structure 1 \(\w+\) has 17 atoms; tiny-test/eager takes at most 16 "
                                             r"per call \(its atoms profile\)$"):
        predictor.predict([atoms[0], big, atoms[1]])


# --- refusals -------------------------------------------------------------------------------------------------


def test_non_finite_results_raise_naming_the_structure(tiny_checkpoint, tmp_path):
    model = make_model()
    with torch.no_grad():
        model.scale.fill_(3e38)  # finite weights whose energies overflow float32
    save_checkpoint(model, tmp_path / "overflow.pt", {})
    with pytest.raises(NonFiniteResultError) as info:
        load(tmp_path / "overflow.pt").predict(molecules(2))
    assert isinstance(info.value, UserInputError) and info.value.exit_code == 65
    message = str(info.value)
    assert "\n" not in message and "overflow/eager gave NaN or infinite energies or forces" in message

    predictor = load(tiny_checkpoint, unseen_elements="allow")
    inner = predictor.runner

    class Poisoned:
        def infer(self, batch):
            result = inner.infer(batch)
            result.forces[batch.numbers == 79] = np.nan  # only the structure holding gold
            return result

    predictor.runner = Poisoned()
    atoms = molecules(3, seed=2, low=6, high=9)
    gold = Atoms("AuH", positions=[[0, 0, 0], [1.6, 0, 0]])
    with pytest.raises(NonFiniteResultError, match=r"^structure 2 \(HAu\): tiny-test/eager gave NaN"):
        predictor.predict(atoms[:2] + [gold] + atoms[2:])  # the smallest: evaluated first, named by its index


def test_the_first_bad_structure_is_named_by_its_index(tiny_checkpoint):
    predictor = load(tiny_checkpoint)
    atoms = molecules(4)
    bad = [Atoms("CC", positions=[[0, 0, 0], [0.1, 0, 0]]), Atoms()]
    with pytest.raises(UserInputError, match="^structure 2 "):
        predictor.predict(atoms[:2] + bad + atoms[2:])


@pytest.mark.parametrize("request_, fragment", [
    (Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]),
     "give a list of ase.Atoms, not a single ase.Atoms (wrap it: [atoms])"),
    ("H2O", "give a list of ase.Atoms, got a str"),
    (None, "give a list of ase.Atoms, got a NoneType"),
    (3, "give a list of ase.Atoms, got a int"),
    ([Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]), 7], "structure 1 is a int, not an ase.Atoms"),
])
def test_requests_that_are_not_lists_of_atoms(tiny_checkpoint, request_, fragment):
    with pytest.raises(UserInputError) as info:
        load(tiny_checkpoint).predict(request_)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_any_iterable_of_atoms_is_a_request(tiny_checkpoint):
    predictor = load(tiny_checkpoint)
    atoms = molecules(3)
    from_list = predictor.predict(atoms)
    assert_same_results(predictor.predict(tuple(atoms)), from_list, 0, 0)
    assert_same_results(predictor.predict(a for a in atoms), from_list, 0, 0)
    assert_same_results(predictor.evaluate(atoms, check=False)[:2], from_list, 0, 0)


# --- threads ------------------------------------------------------------------------------------------------


def test_a_predictor_is_shared_by_threads_one_call_at_a_time(tiny_checkpoint):
    predictor = load(tiny_checkpoint)
    requests = [molecules(3, seed=s) for s in range(6)]
    expected = [predictor.predict(r) for r in requests]
    inner = predictor.runner
    active, overlaps = [0], []
    guard = threading.Lock()

    class Watching:
        def infer(self, batch):
            with guard:
                active[0] += 1
                overlaps.append(active[0])
            time.sleep(0.005)  # long enough for another thread to enter if nothing stopped it
            try:
                return inner.infer(batch)
            finally:
                with guard:
                    active[0] -= 1

    predictor.runner = Watching()
    results: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for _ in range(3):
                results[k] = predictor.predict(requests[k])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(overlaps) >= 18 and max(overlaps) == 1  # never two runner calls at once
    for k, r in enumerate(expected):
        assert_same_results(results[k], r, 0, 0)


def test_an_unlocked_runner_would_overlap():
    """Control for the test above: without the Predictor's lock the same threads do enter together."""
    active, overlaps = [0], []
    guard = threading.Lock()

    def call() -> None:
        with guard:
            active[0] += 1
            overlaps.append(active[0])
        time.sleep(0.02)
        with guard:
            active[0] -= 1

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(overlaps) > 1


def test_predictor_constructed_directly(tiny_checkpoint):
    from deploycc.checkpoint import load_checkpoint
    from deploycc.runtime.validate import Rules
    from deploycc.targets.base import get_target
    from deploycc.targets.eager import eager_runner

    checkpoint = load_checkpoint(tiny_checkpoint)
    settings = get_target("eager").settings()
    rules = Rules.make("direct/eager", 100, 5.0, max_slots=4)
    predictor = Predictor(eager_runner(checkpoint.model, "cpu"), settings, rules, memory_budget=2e9)
    assert predictor.label == "direct/eager" and predictor.budget() == 2e9
    with pytest.raises(UserInputError, match="holds at most 4 .its neighbours profile."):
        predictor.predict(molecules(1, low=8, high=9))


def test_five_thousand_atoms_through_the_public_api_are_extensive():
    """A 5,184-atom periodic water box through deploycc.api.load (the shipped tiny preset): its energy is 8x
    that of the 648-atom box it repeats, its forces and stress repeat too (images across the boundary)."""
    import deploycc.api
    from deploycc.bench.systems import water_box

    small = water_box(625, seed=3)
    small.rattle(0.02, seed=4)
    big = small.repeat(2)
    assert len(big) >= 5000
    predictor = deploycc.api.load("tiny")
    energies, forces, stresses = predictor.evaluate([small, big])
    assert np.all(np.isfinite(energies)) and np.abs(forces[0]).max() > 0.1
    assert energies[1] == pytest.approx(8 * energies[0], rel=1e-6)
    np.testing.assert_allclose(forces[1], np.tile(forces[0], (8, 1)), atol=2e-4)
    np.testing.assert_allclose(stresses[1], stresses[0], atol=1e-6)
