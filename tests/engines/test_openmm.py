"""OpenMM through openmmml's MLPotential('ase') with DeployccCalculator (deploycc/engines/openmm.py): energies and
forces equal the Predictor's in OpenMM's units, and a short NVE run conserves energy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import read

openmm = pytest.importorskip("openmm", reason="OpenMM not installed (pip install deploycc[openmm])")
pytest.importorskip("openmmml", reason="openmmml not installed (pip install deploycc[openmm])")

from openmm import unit  # noqa: E402

from deploycc.api import load  # noqa: E402
from deploycc.engines.openmm import create_system, energy_and_forces, positions_of, simulation  # noqa: E402
from deploycc.errors import UserInputError  # noqa: E402

ASPIRIN = Path(__file__).resolve().parents[2] / "docs" / "md" / "aspirin.xyz"
KJ_PER_MOL = 96.485332  # per eV
KJ_PER_MOL_NM = KJ_PER_MOL * 10  # per eV/Å


@pytest.fixture(scope="module")
def aspirin() -> Atoms:
    return read(ASPIRIN)


@pytest.fixture(scope="module")
def tiny():
    return load("tiny")


def raw_state(context) -> tuple[float, np.ndarray]:
    """Energy (kJ/mol) and forces (kJ/mol/nm) as OpenMM reports them."""
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            np.asarray(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)))


def test_initial_energy_and_forces_equal_the_predictor(aspirin, tiny):
    system, topology, positions = create_system(aspirin, tiny)
    assert [a.element.atomic_number for a in topology.atoms()] == aspirin.numbers.tolist()
    assert system.getNumParticles() == len(aspirin) and topology.getPeriodicBoxVectors() is None
    sim = simulation(aspirin, tiny)
    energies, forces = tiny.predict([aspirin])
    energy_kj, forces_kj = raw_state(sim.context)
    assert energy_kj == pytest.approx(energies[0] * KJ_PER_MOL, rel=3e-8)
    np.testing.assert_allclose(forces_kj, forces[0] * KJ_PER_MOL_NM, rtol=1e-6, atol=1e-5)
    energy, forces_ev = energy_and_forces(sim.context)
    assert energy == pytest.approx(energies[0], abs=1e-9)
    np.testing.assert_allclose(forces_ev, forces[0], atol=1e-9)
    assert np.abs(forces[0]).max() > 1.0  # a rattled frame: the force comparison is not between zeros


def test_nve_run_matches_the_predictor_at_the_end_and_conserves_energy(aspirin, tiny):
    sim = simulation(aspirin, tiny, timestep_fs=0.5)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 7)
    sim.step(5)
    total, potential = [], []
    for _ in range(20):
        sim.step(1)
        state = sim.context.getState(getEnergy=True)
        potential.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL)
        total.append(potential[-1] + state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL)
    final = aspirin.copy()
    final.positions = positions_of(sim.context)
    assert np.abs(final.positions - aspirin.positions).max() > 0.01  # the atoms moved
    energies, forces = tiny.predict([final])
    energy, forces_ev = energy_and_forces(sim.context)
    assert potential[-1] == pytest.approx(energies[0], rel=3e-8)  # 96.485332 is rounded to 1e-8
    assert energy == pytest.approx(energies[0], abs=1e-9)
    np.testing.assert_allclose(forces_ev, forces[0], atol=1e-9)
    # Measured: 0.03 eV peak to peak at 0.5 fs (0.007 at 0.25 fs: the integrator's dt^2), while the potential
    # energy swings by 2 eV; wrong force units or signs break this by orders of magnitude.
    assert np.ptp(total) < 0.1 and np.ptp(total) < 0.05 * np.ptp(potential)


def test_periodic_cell_gets_box_vectors_and_matches_the_predictor():
    metals = load("metals-tiny")
    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    cell.rattle(0.05, seed=3)
    sim = simulation(cell, metals)
    box = sim.topology.getPeriodicBoxVectors()
    np.testing.assert_allclose([v.value_in_unit(unit.angstrom) for v in box], cell.cell.array, atol=1e-12)
    energies, forces = metals.predict([cell])
    energy, forces_ev = energy_and_forces(sim.context)
    assert energy == pytest.approx(energies[0], abs=1e-9)
    np.testing.assert_allclose(forces_ev, forces[0], atol=1e-9)
    assert np.abs(forces[0]).max() > 1e-3


@pytest.mark.parametrize("atoms, words", [
    (Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 0]], cell=[[3.6, 0.5, 0], [0, 3.6, 0], [0, 0, 3.6]], pbc=True),
     "reduced form"),
    (Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 0]], cell=[3.6, 3.6, 3.6], pbc=[True, True, False]), "pbc="),
    (Atoms(), "no atoms"),
])
def test_bad_structures_are_one_line_errors(atoms, words, tiny):
    with pytest.raises(UserInputError, match=words) as error:
        create_system(atoms, tiny)
    assert "\n" not in str(error.value)


def test_bad_settings_are_one_line_errors(aspirin, tiny):
    with pytest.raises(UserInputError, match="platform 'Nope'"):
        simulation(aspirin, tiny, platform="Nope")
    with pytest.raises(UserInputError, match="timestep_fs"):
        simulation(aspirin, tiny, timestep_fs=0)
