"""Periodic boundary conditions: invariances, extensivity, forces across the boundary, and the image slots
checked against an independent finite cluster.  Every model takes periodic input (periodic images are
neighbour slots), so molecules and cells go through one network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from deploycc.model import StudentModel, energy_forces_virials
from deploycc.runtime.neighbours import Structure, neighbour_batch
from deploycc.targets.base import GraphInputs
from helpers import evaluate, make_model, make_periodic_model, periodic_structures

CUTOFF = 5.0


@pytest.fixture(scope="module")
def model() -> StudentModel:
    return make_periodic_model().double()


def predict(model: StudentModel, atoms_list: list) -> tuple[np.ndarray, list[np.ndarray]]:
    """Energies and per-structure forces of one mixed batch (float64)."""
    result = evaluate(model, atoms_list)
    return result.energies, [result.forces_of(k) for k in range(len(atoms_list))]


def atomic_energies(model: StudentModel, atoms) -> np.ndarray:
    batch = neighbour_batch([Structure.from_atoms(atoms)], model.cutoff)
    energies, _f, _w = energy_forces_virials(model, *GraphInputs.from_batch(batch, torch.float64).tensors())
    return energies.numpy()


def rattled_cu(seed: int = 1, reps: tuple[int, int, int] = (1, 1, 1)):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(reps)
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_a_molecule_in_a_large_box_equals_the_free_molecule():
    """Periodic images farther than the cutoff add nothing: a molecule in a 15 Å periodic box (images 10 Å
    apart) is the free molecule; in a 6 Å box its images interact."""
    model = make_model(seed=2).double()
    atoms = Atoms("CH3OH", positions=[[0, 0, 0], [1.09, 0, 0], [-0.36, 1.03, 0], [-0.36, -0.51, 0.89],
                                      [-0.47, -0.67, -1.17], [-1.44, -0.6, -1.2]])
    boxed, tight = atoms.copy(), atoms.copy()
    boxed.cell, boxed.pbc = np.eye(3) * 15.0, True
    tight.cell, tight.pbc = np.eye(3) * 6.0, True
    (e, e_box, e_tight), (f, f_box, _f_tight) = predict(model, [atoms, boxed, tight])
    assert e_box == pytest.approx(e, abs=1e-10)
    np.testing.assert_allclose(f_box, f, atol=1e-10)
    assert abs(e_tight - e) > 1e-4


def test_metals_model_takes_molecules_and_molecular_model_takes_cells():
    """Periodicity is a property of the input: both presets' architectures evaluate both kinds."""
    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    cell.rattle(0.05, seed=3)
    molecule = Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [1.2, 2.1, 0]])
    for model in (make_model(seed=1).double(), make_periodic_model(seed=1).double()):
        result = evaluate(model, [cell, molecule])
        assert np.isfinite(result.energies).all() and np.isfinite(result.forces).all()
        assert np.abs(result.virials[0]).max() > 1e-4


def test_lattice_translation_and_wrapping_leave_energy_and_forces_unchanged(model):
    atoms = rattled_cu()
    moved = atoms.copy()
    moved.positions[0] += 2 * atoms.cell[0] - atoms.cell[2]  # one atom by lattice vectors
    wrapped = atoms.copy()
    wrapped.positions += [0.37, -1.1, 2.9]
    wrapped.wrap()
    energies, forces = predict(model, [atoms, moved, wrapped])
    assert np.ptp(energies) < 1e-9
    np.testing.assert_allclose(forces[1], forces[0], atol=1e-9)
    np.testing.assert_allclose(forces[2], forces[0], atol=1e-9)


def test_rotation_and_permutation_invariance(model):
    atoms = periodic_structures()[3]  # the alloy: two elements, orthorhombic cell
    rotated = atoms.copy()
    rotated.rotate(37, "x", rotate_cell=True)
    rotated.rotate(-71, (1, 2, 3), rotate_cell=True)
    order = np.random.default_rng(0).permutation(len(atoms))
    permuted = atoms[order]
    (e, e_rot, e_perm), (f, f_rot, f_perm) = predict(model, [atoms, rotated, permuted])
    assert e_rot == pytest.approx(e, abs=1e-9) and e_perm == pytest.approx(e, abs=1e-9)
    rotation = np.linalg.solve(atoms.cell.array, rotated.cell.array)  # row vectors: r' = r @ R
    np.testing.assert_allclose(f_rot, f @ rotation, atol=1e-8)
    np.testing.assert_allclose(f_perm, f[order], atol=1e-9)


@pytest.mark.parametrize("reps", [(2, 2, 2), (3, 1, 2)])
def test_supercells_are_extensive(model, reps):
    """A cell narrower than 2 cutoffs (images in every direction) and its supercells: E scales, per-atom
    forces repeat."""
    atoms = rattled_cu()
    supercell = atoms.repeat(reps)
    energies, forces = predict(model, [atoms, supercell])
    copies = int(np.prod(reps))
    assert energies[1] == pytest.approx(copies * energies[0], rel=1e-10)
    np.testing.assert_allclose(forces[1], np.tile(forces[0], (copies, 1)), atol=1e-9)


def test_one_atom_primitive_cell_matches_its_supercell(model):
    """A 2.5 Å wide cell (every neighbour is an image of the one atom) against its 27-atom supercell."""
    atoms = bulk("Au", "fcc", a=4.08)
    supercell = atoms.repeat((3, 3, 3))
    supercell.positions[:] += 0.0
    energies, _ = predict(model, [atoms, supercell])
    assert energies[1] == pytest.approx(27 * energies[0], rel=1e-10)


def test_image_method_matches_a_finite_cluster(model):
    """The atomic energy of the central atom of a cluster of radius > 2 cutoffs (two interactions reach
    2 rc) equals its atomic energy in the periodic cell: an independent check of the image slots."""
    atoms = rattled_cu(seed=4)
    big = atoms.repeat((7, 7, 7))
    centre = big.cell.array.sum(0) / 2
    keep = np.linalg.norm(big.positions - centre, axis=1) < 2 * CUTOFF + 1.0
    cluster = big[keep]
    cluster.pbc = False
    middle = int(np.argmin(np.linalg.norm(cluster.positions - centre, axis=1)))
    frac = np.linalg.solve(atoms.cell.array.T, (cluster.positions[middle] - atoms.positions).T).T
    same = np.flatnonzero(np.all(np.abs(frac - np.round(frac)) < 1e-6, axis=1))
    assert len(same) == 1
    e_cluster = atomic_energies(model, cluster)[middle]
    e_cell = atomic_energies(model, atoms)[same[0]]
    assert e_cluster == pytest.approx(e_cell, abs=1e-8)


def test_forces_are_the_gradient_across_the_boundary(model):
    atoms = rattled_cu()
    atoms.positions[0] = atoms.cell[0] * 0.995 + [0.0, 0.3, 0.1]  # just inside the face
    _, (forces,) = predict(model, [atoms])
    h = 1e-5
    for axis in range(3):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[0, axis] += h
        minus.positions[0, axis] -= h
        (e_plus,), _ = predict(model, [plus])
        (e_minus,), _ = predict(model, [minus])
        assert -(e_plus - e_minus) / (2 * h) == pytest.approx(forces[0, axis], abs=1e-6)


def test_energy_is_continuous_when_an_image_crosses_the_cutoff(model):
    """A two-atom cell stretched so that an image pair passes through the cutoff: no jump in E or F."""
    energies, forces = [], []
    for length in np.linspace(CUTOFF - 1e-4, CUTOFF + 1e-4, 5):
        atoms = bulk("Cu", "sc", a=length)
        atoms.cell[1] *= 1.3
        atoms.cell[2] *= 1.6
        e, f = predict(model, [atoms])
        energies.append(e[0])
        forces.append(f[0])
    assert np.abs(np.diff(energies)).max() < 1e-6


def test_batched_mixed_structures_equal_per_structure_results(model):
    structures = periodic_structures()
    energies, forces = predict(model, structures)
    for k, atoms in enumerate(structures):
        (e,), (f,) = predict(model, [atoms])
        assert energies[k] == pytest.approx(e, abs=1e-9)
        np.testing.assert_allclose(forces[k], f, atol=1e-9)


def test_open_axis_is_neither_wrapped_nor_shifted(model):
    """A slab periodic in-plane: the out-of-plane cell length (vacuum) does not change anything."""
    slab = periodic_structures()[4]
    short = slab.copy()
    short.cell[2] = [0.0, 0.0, 2.0]  # shorter than the slab itself: must not make images
    none = slab.copy()
    none.cell[2] = [0.0, 0.0, 0.0]  # no third vector at all
    energies, forces = predict(model, [slab, short, none])
    assert np.ptp(energies) < 1e-9
    np.testing.assert_allclose(forces[1], forces[0], atol=1e-9)
    np.testing.assert_allclose(forces[2], forces[0], atol=1e-9)
