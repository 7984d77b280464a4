"""Neighbour lists (deploycc/runtime/neighbours.py): vesin's lists against ASE's reference implementation on
molecules, small and triclinic periodic cells and slabs; the slot layout and its reverse indices; the
Verlet cache with a skin."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.neighborlist import neighbor_list

from deploycc.errors import UserInputError
from deploycc.model import energy_forces_virials
from deploycc.runtime.neighbours import (PADDING_DISTANCE, NeighbourCache, Structure, half_list, neighbour_batch,
                                         structures_of)
from deploycc.targets.base import GraphInputs

from helpers import make_model, make_periodic_model, periodic_structures, random_molecule

CUTOFF = 5.0


def cases() -> dict[str, Atoms]:
    rng = np.random.default_rng(21)
    mol = Atoms(*random_molecule(rng, 17))
    far = mol.copy()
    far.positions += [1e4, -3e3, 250.0]  # far from the origin: pair vectors are formed in float64
    tiny_cell = Atoms("Cu", cell=[2.1, 2.1, 2.1], pbc=True)  # one atom, ~60 of its own images
    skewed = Atoms("AlCu", scaled_positions=[[0.05, 0.1, 0.9], [0.5, 0.55, 0.45]],
                   cell=[[3.0, 0, 0], [2.6, 2.9, 0], [-1.4, 1.1, 3.3]], pbc=True)  # strongly triclinic
    slab = fcc111("Al", size=(2, 2, 3), vacuum=4.0)
    slab.pbc = (True, True, False)
    wire = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((1, 1, 2))
    wire.pbc = (False, False, True)
    wire.positions += rng.normal(0, 0.05, wire.positions.shape)
    named = {"molecule": mol, "far-molecule": far, "water": molecule("H2O"), "tiny-cell": tiny_cell,
             "skewed-cell": skewed, "slab": slab, "wire": wire}
    for atoms, name in zip(periodic_structures(2), ("cu4", "prim", "triclinic", "alloy", "slab-rattled", "cluster")):
        named[name] = atoms
    return named


CASES = cases()


def slot_pairs(batch, atom_offset: int = 0, count: int | None = None) -> np.ndarray:
    """Rows (i, j, dx, dy, dz) of every real slot of atoms [atom_offset, atom_offset + count), sorted."""
    count = batch.atoms - atom_offset if count is None else count
    vectors = batch.vectors()
    rows = []
    for i in range(atom_offset, atom_offset + count):
        for m in range(int(batch.degree[i])):
            rows.append([i - atom_offset, batch.neighbours[i, m] - atom_offset, *vectors[i, m]])
    return sort_rows(np.array(rows, dtype=np.float64).reshape(-1, 5))


def sort_rows(rows: np.ndarray) -> np.ndarray:
    rounded = np.round(rows, 6)
    return rows[np.lexsort(rounded.T[::-1])]


def ase_pairs(atoms: Atoms, cutoff: float) -> np.ndarray:
    i, j, d = neighbor_list("ijD", atoms, cutoff)
    return sort_rows(np.column_stack([i, j, d]).astype(np.float64))


@pytest.mark.parametrize("name", list(CASES))
def test_full_list_matches_ase(name):
    atoms = CASES[name]
    batch = neighbour_batch([Structure.from_atoms(atoms)], CUTOFF)
    expected = ase_pairs(atoms, CUTOFF)
    assert len(expected) > 0
    ours = slot_pairs(batch)
    assert ours.shape == expected.shape, (len(ours), len(expected))
    np.testing.assert_array_equal(ours[:, :2], expected[:, :2])
    np.testing.assert_allclose(ours[:, 2:], expected[:, 2:], atol=1e-9)
    np.testing.assert_array_equal(batch.degree, np.bincount(neighbor_list("i", atoms, CUTOFF), minlength=len(atoms)))
    assert batch.slots == max(int(batch.degree.max()), 1)


@pytest.mark.parametrize("name", ["molecule", "tiny-cell", "skewed-cell", "slab", "wire", "alloy"])
def test_half_list_holds_every_pair_once(name):
    atoms = CASES[name]
    structure = Structure.from_atoms(atoms)
    half = half_list(structure, CUTOFF)
    full = neighbor_list("ijD", atoms, CUTOFF)
    assert 2 * len(half.i) == len(full[0])
    np.testing.assert_array_equal(half.degree(len(atoms)), np.bincount(full[0], minlength=len(atoms)))
    distances = half.distances(structure.positions)
    assert np.all(distances <= CUTOFF + 1e-9)
    np.testing.assert_allclose(np.sort(np.concatenate([distances, distances])),
                               np.sort(np.linalg.norm(full[2], axis=1)), atol=1e-9)


@pytest.mark.parametrize("name", ["molecule", "tiny-cell", "skewed-cell", "slab", "cu4", "cluster"])
def test_reverse_indices_point_at_the_mirror_slot(name):
    batch = neighbour_batch([Structure.from_atoms(CASES[name])], CUTOFF)
    a, m = batch.neighbours.shape
    flat_reverse = batch.reverse.reshape(-1)
    flat_neighbours = batch.neighbours.reshape(-1)
    vectors = batch.vectors().reshape(-1, 3)
    owner = np.repeat(np.arange(a), m)
    assert flat_reverse.min() >= 0 and flat_reverse.max() < a * m
    np.testing.assert_array_equal(flat_reverse[flat_reverse], np.arange(a * m))  # an involution
    real = (np.arange(m)[None, :] < batch.degree[:, None]).reshape(-1)
    k = np.flatnonzero(real)
    np.testing.assert_array_equal(flat_neighbours[flat_reverse[k]], owner[k])  # j's slot holds i
    np.testing.assert_array_equal(flat_reverse[k] // m, flat_neighbours[k])  # and lies in j's row
    np.testing.assert_allclose(vectors[flat_reverse[k]], -vectors[k], atol=1e-12)  # the opposite vector
    pad = np.flatnonzero(~real)
    np.testing.assert_array_equal(flat_neighbours[pad], owner[pad])  # padding points at its own atom
    np.testing.assert_array_equal(flat_reverse[pad], pad)
    assert np.all(np.linalg.norm(vectors[pad], axis=1) > CUTOFF)
    np.testing.assert_allclose(np.linalg.norm(vectors[pad], axis=1), PADDING_DISTANCE)


def test_a_batch_concatenates_structures_without_shared_neighbours():
    items = [CASES["water"], CASES["tiny-cell"], Atoms("H", positions=[[0, 0, 0]]), CASES["slab"], CASES["molecule"]]
    structures = [Structure.from_atoms(a) for a in items]
    batch = neighbour_batch(structures, CUTOFF)
    sizes = [len(a) for a in items]
    np.testing.assert_array_equal(batch.offsets, np.concatenate([[0], np.cumsum(sizes)]))
    assert batch.structures == len(items) and batch.atoms == sum(sizes)
    assert batch.slots == max(int(batch.degree.max()), 1)
    for k, atoms in enumerate(items):
        lo, hi = batch.offsets[k], batch.offsets[k + 1]
        assert np.all((batch.neighbours[lo:hi] >= lo) & (batch.neighbours[lo:hi] < hi))  # never another structure's
        alone = slot_pairs(neighbour_batch([structures[k]], CUTOFF))
        np.testing.assert_allclose(slot_pairs(batch, lo, hi - lo), alone, atol=1e-12)
        np.testing.assert_array_equal(batch.cells[k], atoms.cell.array)
        np.testing.assert_array_equal(batch.pbc[k], atoms.pbc)
    assert batch.degree[batch.offsets[2]] == 0  # the lone atom: padding only
    per_atom = np.arange(batch.atoms, dtype=np.float64)
    np.testing.assert_allclose(batch.per_structure(per_atom),
                               [per_atom[batch.offsets[k]:batch.offsets[k + 1]].sum() for k in range(len(items))])


def test_empty_structures_and_empty_requests():
    empty = Structure.of(np.zeros(0, np.int64), np.zeros((0, 3)))
    batch = neighbour_batch([Structure.from_atoms(CASES["water"]), empty, Structure.from_atoms(CASES["water"])],
                            CUTOFF)
    np.testing.assert_array_equal(batch.offsets, [0, 3, 3, 6])
    np.testing.assert_array_equal(batch.per_structure(np.ones(6)), [3.0, 0.0, 3.0])  # no reduceat spill-over
    nothing = neighbour_batch([], CUTOFF)
    assert nothing.atoms == 0 and nothing.structures == 0 and nothing.per_structure(np.zeros(0)).shape == (0,)


def test_skin_widens_the_list_and_bad_arguments_are_refused():
    atoms = CASES["molecule"]
    structure = Structure.from_atoms(atoms)
    wide = neighbour_batch([structure], CUTOFF, skin=1.0)
    np.testing.assert_allclose(slot_pairs(wide), ase_pairs(atoms, CUTOFF + 1.0), atol=1e-9)
    assert wide.degree.sum() > neighbour_batch([structure], CUTOFF).degree.sum()
    with pytest.raises(UserInputError, match="too large"):
        neighbour_batch([structure], 45.0, skin=10.0)
    with pytest.raises(UserInputError, match="skin must be >= 0"):
        NeighbourCache(CUTOFF, -0.1)
    with pytest.raises(UserInputError, match="must be integers"):
        Structure.of([1.0, 6.5], np.zeros((2, 3)))
    assert Structure.of(np.array([1.0, 6.0]), np.zeros((2, 3))).numbers.dtype == np.int64


def test_structures_of_a_dataset_keep_cells_and_pbc(periodic_calib_file, calib_file):
    from deploycc.data.schema import read_structures

    metals = read_structures(periodic_calib_file)
    structures = structures_of(metals)
    assert len(structures) == len(metals)
    for k, s in enumerate(structures):
        np.testing.assert_array_equal(s.cell, metals.cells[k])
        np.testing.assert_array_equal(s.pbc, metals.pbc[k])
    assert any(s.periodic for s in structures) and not all(s.periodic for s in structures)
    assert not any(s.periodic for s in structures_of(read_structures(calib_file)))


# --- the Verlet cache ------------------------------------------------------------------------------------------


def run_model(model, batch) -> tuple[float, np.ndarray, np.ndarray]:
    """Energy, forces and virial of a one-structure batch, in float64."""
    inputs = GraphInputs.from_batch(batch, torch.float64)
    energies, forces, virials = energy_forces_virials(copy.deepcopy(model).double(), *inputs.tensors())
    return float(energies.sum()), forces.numpy(), virials.numpy().sum(0)


@pytest.mark.parametrize("name, model", [("molecule", make_model()), ("alloy", make_periodic_model()),
                                         ("slab", make_periodic_model())])
def test_cache_reuses_its_list_until_an_atom_moves_half_the_skin(name, model):
    skin = 0.6
    atoms = CASES[name].copy()
    cache = NeighbourCache(model.cutoff, skin)
    first = cache.get(Structure.from_atoms(atoms))
    assert cache.builds == 1
    rng = np.random.default_rng(4)
    for step in range(6):  # many small moves, each atom within skin/2 of where the list was built
        moved = atoms.copy()
        moved.positions += rng.uniform(-1, 1, atoms.positions.shape) * (0.29 * skin / np.sqrt(3))
        structure = Structure.from_atoms(moved)
        batch = cache.get(structure)
        assert cache.builds == 1, f"rebuilt at step {step}"
        assert batch is first  # the same list, positions updated
        np.testing.assert_array_equal(batch.positions, moved.positions)
        fresh = neighbour_batch([structure], model.cutoff)
        e, f, w = run_model(model, batch)
        e0, f0, w0 = run_model(model, fresh)
        assert e == pytest.approx(e0, abs=1e-9)
        np.testing.assert_allclose(f, f0, atol=1e-9)
        np.testing.assert_allclose(w, w0, atol=1e-9)
    far = atoms.copy()
    far.positions[3] += [0.0, 0.51 * skin, 0.0]  # past skin/2 from the reference
    structure = Structure.from_atoms(far)
    batch = cache.get(structure)
    assert cache.builds == 2
    np.testing.assert_allclose(slot_pairs(batch), ase_pairs(far, model.cutoff + skin), atol=1e-9)
    e, f, w = run_model(model, batch)
    e0, f0, w0 = run_model(model, neighbour_batch([structure], model.cutoff))
    assert e == pytest.approx(e0, abs=1e-9)
    np.testing.assert_allclose(f, f0, atol=1e-9)
    np.testing.assert_allclose(w, w0, atol=1e-9)
    assert cache.get(structure) is batch and cache.builds == 2  # measured from the new reference


def test_a_stale_list_would_be_wrong_so_the_threshold_matters():
    """Control: once two atoms have each moved more than skin/2 toward each other, a pair absent from the old
    list can be inside the cutoff; the cache rebuilds, and the stale list would have missed the pair."""
    model = make_model()
    skin = 0.4
    start = model.cutoff + skin + 0.05
    atoms = Atoms("CH", positions=[[0, 0, 0], [start, 0, 0]])
    cache = NeighbourCache(model.cutoff, skin)
    stale = copy.deepcopy(cache.get(Structure.from_atoms(atoms)))
    assert stale.degree.sum() == 0
    atoms = atoms.copy()  # a new positions array: the cache keeps a reference to the one it was built from
    atoms.positions[:, 0] += [0.25, -0.25]  # each 0.25 > skin/2: now 4.95 A apart, inside the cutoff
    batch = cache.get(Structure.from_atoms(atoms))
    assert cache.builds == 2 and batch.degree.sum() == 2
    stale.positions = atoms.positions
    assert run_model(model, stale)[0] != pytest.approx(run_model(model, batch)[0], abs=1e-6)


def test_cache_rebuilds_on_numbers_cell_pbc_and_always_without_a_skin():
    atoms = CASES["cu4"].copy()
    cache = NeighbourCache(CUTOFF, 0.5)
    cache.get(Structure.from_atoms(atoms))
    cache.get(Structure.from_atoms(atoms))
    assert cache.builds == 1
    changed = atoms.copy()
    changed.numbers[0] = 79
    cache.get(Structure.from_atoms(changed))
    assert cache.builds == 2
    strained = changed.copy()
    strained.set_cell(strained.cell.array * 1.001, scale_atoms=False)
    cache.get(Structure.from_atoms(strained))
    assert cache.builds == 3
    open_axis = strained.copy()
    open_axis.pbc = (True, True, False)
    cache.get(Structure.from_atoms(open_axis))
    assert cache.builds == 4
    shorter = open_axis[:-1]
    cache.get(Structure.from_atoms(shorter))
    assert cache.builds == 5
    nan = shorter.copy()
    nan.positions[0, 0] = np.nan
    assert cache._stale(Structure.from_atoms(nan))  # NaN never counts as "has not moved"
    no_skin = NeighbourCache(CUTOFF, 0.0)
    for _ in range(3):
        no_skin.get(Structure.from_atoms(atoms))
    assert no_skin.builds == 3


def _mixed_structures() -> list[Structure]:
    rng = np.random.default_rng(8)
    items = [Structure.of(*random_molecule(rng, n)) for n in (3, 11, 7, 20, 5)]
    return items + [Structure.from_atoms(a) for a in periodic_structures(1)[:3]]


def test_split_batches_hold_whole_structures_within_the_limit():
    batch = neighbour_batch(_mixed_structures(), CUTOFF)
    parts = batch.split(24)
    assert sum(p.structures for p in parts) == batch.structures
    assert all(p.atoms <= 24 or p.structures == 1 for p in parts)
    assert len(parts) > 2
    np.testing.assert_array_equal(np.concatenate([p.numbers for p in parts]), batch.numbers)


def test_a_split_batch_gives_the_results_of_the_whole():
    """Each part (indices re-based, slots trimmed to its widest atom) computes what the whole batch does,
    and a chunked runner equals an unchunked one."""
    from deploycc.targets.eager import eager_runner

    batch = neighbour_batch(_mixed_structures(), CUTOFF)
    runner = eager_runner(make_model(seed=2).double(), "cpu")
    whole = runner.infer(batch)
    parts = batch.split(24)
    assert any(p.slots < batch.slots for p in parts)  # trimming is exercised
    energies = np.concatenate([runner.infer(p).energies for p in parts])
    forces = np.concatenate([runner.infer(p).forces for p in parts])
    # the runner casts pair vectors to float32: parts agree with the whole to float32 rounding
    np.testing.assert_allclose(energies, whole.energies, rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(forces, whole.forces, rtol=0, atol=1e-6)
    runner.chunk_atoms = 24
    chunked = runner.infer(batch)
    np.testing.assert_allclose(chunked.energies, whole.energies, rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(chunked.virials, whole.virials, rtol=0, atol=1e-6)
    assert np.abs(whole.forces).max() > 1e-2
