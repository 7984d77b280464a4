"""Batched teacher-MD walkers: units, thermostat, exact labels of kept frames, restarts, reproducibility."""

import numpy as np
import pytest

ase = pytest.importorskip("ase")
from ase import units  # noqa: E402
from ase.build import molecule  # noqa: E402

from deploycc.train import walkers as walkers_module  # noqa: E402
from deploycc.train.walkers import Walkers, kinetic_temperature  # noqa: E402

K = 5.0  # eV/Å²: an isotropic harmonic well around each atom's start


def _pool():
    return [(0, molecule("H2O")), (1, molecule("CH4")), (2, molecule("C2H6"))]


class Harmonic:
    """E = K/2 Σ|r - r0|² around each atom's starting position (a label function with known physics)."""

    def __init__(self, pool):
        self.centres = {len(a): a.positions.copy() for _, a in pool}  # the pool's molecules differ in size
        self.calls = 0

    def __call__(self, structures):
        self.calls += 1
        energies, forces = [], []
        for atoms in structures:
            d = atoms.positions - self.centres[len(atoms)]
            energies.append(0.5 * K * (d ** 2).sum())
            forces.append(-K * d)
        return np.array(energies), forces


def test_the_femtosecond_is_ase_s():
    assert walkers_module.FS == pytest.approx(units.fs, rel=1e-7)  # CODATA vintages differ in the 9th digit


def test_the_thermostat_holds_the_drawn_temperature(monkeypatch):
    monkeypatch.setattr(walkers_module, "FRICTION", 0.1)  # decorrelates faster, so the mean converges in the test
    pool = _pool()
    w = Walkers(pool, count=48, stride=1, lifetime=10**9, rng=np.random.default_rng(0), temperatures=(600.0, 600.0))
    label = Harmonic(pool)
    samples = []
    for step in range(1200):
        w.step(label)
        if step >= 200:
            samples.extend(kinetic_temperature(x) for x in w.walkers)
    assert np.mean(samples) == pytest.approx(600.0, rel=0.03)


def test_kept_frames_carry_the_teacher_s_labels_at_their_positions():
    pool = _pool()
    label = Harmonic(pool)
    w = Walkers(pool, count=6, stride=3, lifetime=4, rng=np.random.default_rng(1))
    frames = w.frames(label, 30)
    assert len(frames) == 30
    for mol_id, atoms, energy, force in frames:
        (e,), (f,) = Harmonic(pool)([atoms])
        assert energy == pytest.approx(e, rel=1e-12) and np.allclose(force, f)
        assert len(atoms) == len(pool[mol_id][1])
    moved = [np.abs(atoms.positions - pool[m][1].positions).max() for m, atoms, _, _ in frames]
    assert min(moved) > 1e-3  # frames are MD snapshots, not the starting conformers


def test_staggered_walkers_keep_about_count_over_stride_frames_a_call():
    pool = _pool()
    label = Harmonic(pool)
    w = Walkers(pool, count=20, stride=4, lifetime=10**9, rng=np.random.default_rng(2))
    for _ in range(walkers_module.BURN_IN + 8):
        w.step(label)
    per_call = [len(w.step(label)) for _ in range(8)]
    assert per_call == [5] * 8


def test_a_walker_with_bad_labels_restarts_and_its_frame_is_dropped():
    pool = _pool()
    good = Harmonic(pool)
    poison_at = walkers_module.BURN_IN + 5  # a call that keeps every walker's frame (stride 1)

    def label(structures):
        energies, forces = good(structures)
        if good.calls == poison_at:
            energies[0] = np.nan
        return energies, forces

    w = Walkers(pool, count=4, stride=1, lifetime=10**9, rng=np.random.default_rng(3))
    per_call = [w.step(label) for _ in range(poison_at)]
    assert [len(k) for k in per_call[-3:]] == [4, 4, 3]
    assert w.restarts == 1 and all(np.isfinite(e) for call in per_call for _, _, e, _ in call)


def test_kept_frames_are_near_the_drawn_temperature_with_the_default_friction():
    pool = _pool()
    label = Harmonic(pool)
    w = Walkers(pool, count=48, stride=1, lifetime=200, rng=np.random.default_rng(6), temperatures=(600.0, 600.0))
    samples = []
    for _ in range(walkers_module.BURN_IN + 150):
        w.step(label)
        samples.extend(kinetic_temperature(x) for x in w.walkers if x.steps > walkers_module.BURN_IN)
    assert np.mean(samples) == pytest.approx(600.0, rel=0.10)


def test_the_timestep_is_half_a_femtosecond(monkeypatch):
    monkeypatch.setattr(walkers_module, "FRICTION", 0.0)
    pool = [(0, molecule("H2"))]
    w = Walkers(pool, count=1, stride=1, lifetime=10**9, rng=np.random.default_rng(0))
    centre = pool[0][1].positions[0, 0]
    x = []
    for _ in range(1200):
        w.step(Harmonic(pool))
        x.append(w.walkers[0].atoms.positions[0, 0] - centre)
    crossings = int(np.sum(np.diff(np.sign(x)) != 0))
    period_fs = 2 * np.pi * np.sqrt(w.walkers[0].masses[0] / K) / units.fs  # ω² = K/m in ASE's units
    assert crossings == pytest.approx(2 * 1200 * walkers_module.TIMESTEP / period_fs, abs=2)


def test_held_out_walkers_give_each_molecule_its_frames_even_through_a_restart():
    pool = [(k, a) for k, (_, a) in enumerate(_pool() * 2)]  # six molecules
    good = Harmonic(pool)

    def label(structures):
        energies, forces = good(structures)
        if good.calls == walkers_module.BURN_IN + 3:
            energies[1] = np.nan  # molecule 1's walker goes bad mid-life
        return energies, forces

    w = Walkers(pool, count=6, stride=2, lifetime=3, rng=np.random.default_rng(4), in_order=True)
    frames = w.frames(label, 100)
    counts = {m: sum(1 for f in frames if f[0] == m) for m in range(6)}
    assert w.restarts == 1 and counts == {m: 3 for m in range(6)} and w.exhausted


def test_staggered_lifetimes_keep_frames_coming_at_every_call():
    pool = _pool()
    label = Harmonic(pool)
    w = Walkers(pool, count=20, stride=4, lifetime=50, rng=np.random.default_rng(2))
    for _ in range(walkers_module.BURN_IN + 8):
        w.step(label)
    per_call = [len(w.step(label)) for _ in range(600)]  # three lifetimes: every walker restarts
    assert min(per_call) >= 1


def test_walkers_that_go_bad_one_by_one_before_any_frame_are_given_up_on():
    pool = _pool()
    good = Harmonic(pool)

    def label(structures):  # one walker a call goes bad: never all at once, and none lives to its first frame
        energies, forces = good(structures)
        energies[good.calls % len(structures)] = np.nan
        return energies, forces

    w = Walkers(pool, count=3, stride=2, lifetime=5, rng=np.random.default_rng(8))
    assert w.frames(label, 10) == [] and w.exhausted
    assert w.calls <= 3 * (walkers_module.BURN_IN + 2) + 1


def test_lifetime_restarts_walkers_on_other_conformers():
    pool = _pool()
    w = Walkers(pool, count=3, stride=1, lifetime=2, rng=np.random.default_rng(4))
    seen = {m for m, _, _, _ in w.frames(Harmonic(pool), 60)}
    assert seen == {0, 1, 2}


def test_the_same_seed_gives_the_same_frames():
    def run(seed):
        pool = _pool()
        return Walkers(pool, count=5, stride=2, lifetime=3, rng=np.random.default_rng(seed)).frames(Harmonic(pool), 25)

    a, b, c = run(7), run(7), run(8)
    assert all(np.array_equal(x[1].positions, y[1].positions) for x, y in zip(a, b))
    assert not all(np.array_equal(x[1].positions, y[1].positions) for x, y in zip(a, c))


def test_a_teacher_that_fails_every_walker_is_given_up_on():
    pool = _pool()

    def failing(structures):
        return np.full(len(structures), np.nan), [np.zeros((len(a), 3)) for a in structures]

    w = Walkers(pool, count=3, stride=1, lifetime=5, rng=np.random.default_rng(5))
    assert w.frames(failing, 10) == []
    assert w.calls == walkers_module.MAX_FAILED_CALLS
