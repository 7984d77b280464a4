"""Periodic boundary conditions: invariances, extensivity, forces across the boundary, and the image method
checked against an independent finite cluster."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from conftest import make_model, make_periodic_model, periodic_structures
from deploycc.errors import UserInputError
from deploycc.model import StudentModel, energy_and_forces
from deploycc.periodic import check_cell, lattice_shifts, periodic_inputs, shift_range

CUTOFF = 5.0


@pytest.fixture(scope="module")
def model() -> StudentModel:
    return make_periodic_model().double()


def inputs64(atoms_list: list) -> tuple[torch.Tensor, ...]:
    """A padded mixed batch in float64 throughout (pad() rounds to float32, the artifacts' precision)."""
    width = max(len(a) for a in atoms_list)
    z = torch.zeros(len(atoms_list), width, dtype=torch.long)
    r = torch.zeros(len(atoms_list), width, 3, dtype=torch.float64)
    for k, atoms in enumerate(atoms_list):
        z[k, : len(atoms)] = torch.tensor(atoms.numbers)
        r[k, : len(atoms)] = torch.tensor(atoms.positions)
    cell = torch.tensor(np.array([check_cell(a.cell.array, a.pbc, CUTOFF, "test") for a in atoms_list]))
    pbc = torch.tensor(np.array([a.pbc for a in atoms_list]), dtype=torch.float64)
    return periodic_inputs(z, r, cell, pbc, CUTOFF)


def predict(model: StudentModel, atoms_list: list) -> tuple[np.ndarray, list[np.ndarray]]:
    """Energies and per-structure forces of a padded, mixed batch (float64)."""
    energy, forces = energy_and_forces(model, *inputs64(atoms_list))
    return energy.numpy(), [forces[k, : len(a)].numpy() for k, a in enumerate(atoms_list)]


def atomic_energies(model: StudentModel, atoms) -> np.ndarray:
    return model.atomic_energies(*inputs64([atoms]))[0].detach().numpy()


def rattled_cu(seed: int = 1, reps: tuple[int, int, int] = (1, 1, 1)):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(reps)
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_molecules_match_the_non_periodic_model(model):
    """With pbc off, the image-summed formulation equals the molecular model with the same weights."""
    plain = make_model(preset="tiny").double()
    plain.load_state_dict(model.state_dict())
    atoms = periodic_structures()[-1]  # the non-periodic cluster
    e_periodic, f_periodic = predict(model, [atoms])
    z, r = inputs64([atoms])[:2]
    e_plain, f_plain = energy_and_forces(plain, z, r)
    assert e_periodic[0] == pytest.approx(float(e_plain[0]), abs=1e-9)
    np.testing.assert_allclose(f_periodic[0], f_plain[0].numpy(), atol=1e-9)


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
    """A cell narrower than 2 cutoffs (27 shifts) and its supercells: E scales, per-atom forces repeat."""
    atoms = rattled_cu()
    supercell = atoms.repeat(reps)
    energies, forces = predict(model, [atoms, supercell])
    copies = int(np.prod(reps))
    assert energies[1] == pytest.approx(copies * energies[0], rel=1e-10)
    np.testing.assert_allclose(forces[1], np.tile(forces[0], (copies, 1)), atol=1e-9)


def test_one_atom_primitive_cell_matches_its_supercell(model):
    """125 lattice shifts (a 2.5 Å wide cell) against a 27-atom supercell that needs 27."""
    atoms = bulk("Au", "fcc", a=4.08)
    supercell = atoms.repeat((3, 3, 3))
    supercell.positions[:] += 0.0
    energies, _ = predict(model, [atoms, supercell])
    assert energies[1] == pytest.approx(27 * energies[0], rel=1e-10)


def test_image_method_matches_a_finite_cluster(model):
    """The atomic energy of the central atom of a cluster of radius > 2 cutoffs (two interactions reach
    2 rc) equals its atomic energy in the periodic cell: an independent check of wrapping + shifts."""
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
    short.cell[2] = [0.0, 0.0, 2.0]  # shorter than the slab itself: must not wrap
    none = slab.copy()
    none.cell[2] = [0.0, 0.0, 0.0]
    energies, forces = predict(model, [slab, short, none])
    assert np.ptp(energies) < 1e-9
    np.testing.assert_allclose(forces[1], forces[0], atol=1e-9)
    np.testing.assert_allclose(forces[2], forces[0], atol=1e-9)


def test_shift_range_follows_the_perpendicular_width():
    assert list(shift_range(np.eye(3) * 10.83, np.ones(3, bool), CUTOFF)) == [0, 0, 0]
    assert list(shift_range(np.eye(3) * 3.61, np.ones(3, bool), CUTOFF)) == [1, 1, 1]
    assert list(shift_range(np.eye(3) * 3.61, np.array([True, False, True]), CUTOFF)) == [1, 0, 1]
    skewed = np.array([[10.0, 0, 0], [9.0, 3.0, 0], [0, 0, 12.0]])  # |b| > 9 but only 3 Å between faces
    assert shift_range(skewed, np.ones(3, bool), CUTOFF)[0] >= 1


def test_lattice_shifts_cover_the_batch_and_start_at_zero():
    cell = torch.stack([torch.eye(3) * 3.61, torch.eye(3) * 12.0])
    pbc = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    shifts = lattice_shifts(cell, pbc, CUTOFF)
    assert shifts.shape == (9, 3)
    assert torch.equal(shifts[0], torch.zeros(3))
    assert torch.all(shifts[:, 2] == 0)


@pytest.mark.parametrize("cell, pbc, message", [
    (np.full((3, 3), np.nan), [True, True, True], "NaN"),
    (np.array([[3.0, 0, 0], [6.0, 0, 0], [0, 0, 3.0]]), [True, True, True], "zero volume"),
    (np.zeros((3, 3)), [True, False, False], "zero volume"),
    (np.eye(3) * 1.0, [True, True, True], "too small"),
])
def test_bad_cells_are_refused_with_one_line(cell, pbc, message):
    with pytest.raises(UserInputError, match=message) as info:
        check_cell(cell, np.array(pbc), CUTOFF, "structure 3 (Cu)")
    assert "structure 3" in str(info.value) and "\n" not in str(info.value)


def test_molecules_get_an_identity_cell():
    cell = check_cell(np.zeros((3, 3)), np.zeros(3, bool), CUTOFF, "x")
    np.testing.assert_array_equal(cell, np.eye(3))
