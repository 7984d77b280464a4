"""Virials and stress: the strain derivative against finite differences, symmetry, intensivity, rotation
covariance, ASE's sign convention, and batches that mix cells with molecules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from deploycc.model import EnergyForcesVirials, StudentModel, stress_from_virial
from deploycc.runtime.neighbours import Structure, neighbour_batch
from deploycc.targets.base import GraphInputs
from helpers import evaluate, make_periodic_model, periodic_structures

from test_periodic import rattled_cu


@pytest.fixture(scope="module")
def model() -> StudentModel:
    return make_periodic_model().double()


def stress_of(model: StudentModel, atoms_list: list) -> np.ndarray:
    """ASE-convention stresses [B, 3, 3]: each structure's virial over the volume of its cell as given."""
    virials = evaluate(model, atoms_list).virials
    return np.array([stress_from_virial(w, atoms.cell.array) for w, atoms in zip(virials, atoms_list)])


def finite_difference_stress(model: StudentModel, atoms, h: float = 1e-5) -> np.ndarray:
    """(1/V) dE/d(strain_ab) by central differences of the energy under strained positions and cell."""
    out = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1.0, -1.0):
                step = np.eye(3)
                step[a, b] += sign * h
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ step)
                strained.positions = atoms.positions @ step
                energies.append(evaluate(model, [strained]).energies[0])
            out[a, b] = (energies[0] - energies[1]) / (2 * h)
    return out / abs(np.linalg.det(atoms.cell.array))


def sheared(atoms):
    out = atoms.copy()
    out.set_cell(out.cell.array @ np.array([[1.0, 0.03, 0.0], [0.0, 1.0, -0.02], [0.01, 0.0, 0.97]]), scale_atoms=True)
    return out


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4])  # small cell, 1-atom cell, triclinic, alloy, slab
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


def test_mixed_batch_virials_equal_per_structure(model):
    """Per-atom virials sum to each structure's virial whatever shares the call (a molecule included)."""
    structures = periodic_structures()
    together = evaluate(model, structures).virials
    for k, atoms in enumerate(structures):
        np.testing.assert_allclose(together[k], evaluate(model, [atoms]).virials[0], atol=1e-10)


def test_sign_follows_ase_compression_is_negative():
    """The shipped metals-tiny (distilled from EMT): a compressed Cu cell has negative diagonal stress, as
    ASE's EMT says, and an expanded one positive."""
    from ase.calculators.emt import EMT

    from deploycc.checkpoint import load_checkpoint

    trained = load_checkpoint("metals-tiny").model.double()
    for a, sign in ((3.45, -1.0), (3.80, 1.0)):
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.calc = EMT()
        assert np.all(np.sign(atoms.get_stress()[:3]) == sign)
        assert np.all(np.sign(np.diag(stress_of(trained, [atoms])[0])) == sign)


def test_scripted_wrapper_matches_eager(model):
    scripted = torch.jit.script(EnergyForcesVirials(model.set_recompute(False)))
    batch = neighbour_batch([Structure.from_atoms(a) for a in periodic_structures()], model.cutoff)
    inputs = GraphInputs.from_batch(batch, torch.float64)
    from deploycc.model import energy_forces_virials

    for got, want in zip(scripted(*inputs.tensors()), energy_forces_virials(model, *inputs.tensors())):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
