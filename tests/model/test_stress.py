"""Virial and stress of periodic models: the strain derivative against finite differences, symmetry, intensivity,
rotation covariance, agreement with ASE's sign convention, and batches that mix in molecules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from conftest import make_periodic_model, periodic_structures
from deploycc.model import EnergyForcesVirial, StudentModel, energy_and_forces, energy_forces_virial
from deploycc.model.stress import stress_from_virial

from test_periodic import inputs64, rattled_cu


@pytest.fixture(scope="module")
def model() -> StudentModel:
    return make_periodic_model().double()


def stress_of(model: StudentModel, atoms_list: list) -> np.ndarray:
    """ASE-convention stresses [B, 3, 3]: the graph's virial over the volume of each cell as given."""
    virials = energy_forces_virial(model, *inputs64(atoms_list))[2].numpy()
    return np.array([stress_from_virial(w, atoms.cell.array) for w, atoms in zip(virials, atoms_list)])


def finite_difference_stress(model: StudentModel, atoms, h: float = 1e-5) -> np.ndarray:
    """(1/V) dE/d(strain_ab) by central differences of the energy under strained positions and cell."""
    z, r, cell, pbc, shifts = inputs64([atoms])
    out = np.zeros((3, 3))
    with torch.no_grad():
        for a in range(3):
            for b in range(3):
                step = torch.eye(3, dtype=torch.float64)
                step[a, b] += h
                plus = model(z, r @ step, cell @ step, pbc, shifts)
                step[a, b] -= 2 * h
                minus = model(z, r @ step, cell @ step, pbc, shifts)
                out[a, b] = float(plus - minus) / (2 * h)
    return out / abs(np.linalg.det(atoms.cell.array))


def sheared(atoms):
    out = atoms.copy()
    out.set_cell(out.cell.array @ np.array([[1.0, 0.03, 0.0], [0.0, 1.0, -0.02], [0.01, 0.0, 0.97]]), scale_atoms=True)
    return out


@pytest.mark.parametrize("index", [0, 2, 3, 4])  # 27-shift cell, triclinic, alloy, slab
def test_stress_is_the_strain_derivative_of_the_energy(model, index):
    atoms = sheared(periodic_structures()[index])
    autograd = stress_of(model, [atoms])[0]
    numeric = finite_difference_stress(model, atoms)
    assert np.abs(numeric).max() > 1e-4  # a strained, rattled cell is not stress-free
    np.testing.assert_allclose(autograd, numeric, atol=1e-8)


def test_stress_is_symmetric_and_intensive(model):
    atoms = sheared(rattled_cu(seed=3))
    small, big = stress_of(model, [atoms, atoms.repeat((2, 1, 2))])
    np.testing.assert_allclose(small, small.T, atol=1e-10)
    np.testing.assert_allclose(big, small, atol=1e-10)


def test_stress_rotates_with_the_structure(model):
    atoms = sheared(periodic_structures()[3])
    angle = 0.7
    q = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ q)
    rotated.positions = atoms.positions @ q
    sigma, sigma_rotated = stress_of(model, [atoms, rotated])
    np.testing.assert_allclose(sigma_rotated, q.T @ sigma @ q, atol=1e-9)


def test_forces_and_energy_are_unchanged_by_the_strain_path(model):
    batch = inputs64(periodic_structures())
    energy, forces, _ = energy_forces_virial(model, *batch)
    energy_plain, forces_plain = energy_and_forces(model, *batch)
    torch.testing.assert_close(energy, energy_plain, atol=1e-10, rtol=0)
    torch.testing.assert_close(forces, forces_plain, atol=1e-10, rtol=0)


def test_sign_follows_ase_compression_is_negative():
    """The shipped metals-tiny (distilled from EMT): a compressed Cu cell has negative diagonal stress, as ASE's
    EMT says, and an expanded one positive."""
    from ase.calculators.emt import EMT

    from deploycc.checkpoint import load_checkpoint

    trained = load_checkpoint("metals-tiny").model.double()
    for a, sign in ((3.45, -1.0), (3.80, 1.0)):
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.calc = EMT()
        assert np.all(np.sign(atoms.get_stress()[:3]) == sign)
        assert np.all(np.sign(np.diag(stress_of(trained, [atoms])[0])) == sign)


def test_scripted_wrapper_matches_eager(model):
    scripted = torch.jit.script(EnergyForcesVirial(model))
    batch = inputs64(periodic_structures())
    for got, want in zip(scripted(*batch), energy_forces_virial(model, *batch)):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
