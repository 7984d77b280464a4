"""What a sweep measures: structures of about the requested size, and pools of distinct prepared batches
(rattled copies with neighbour lists built before timing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploycc.bench.workload import (RATTLE_SIGMA, InputPool, PoolEntry, Workload, load_workload, make_pool,
                                     make_workload, select_structures)
from deploycc.errors import UserInputError
from deploycc.runtime.neighbours import PADDING_DISTANCE, Structure
from deploycc.targets.base import GraphInputs

from helpers import molecules, periodic_structures

CUTOFF = 5.0


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


# ------------------------------------------------------------------------------------------- choosing structures


def test_select_structures_keeps_the_window_only():
    sizes = [5, 10, 22, 25, 28, 29, 40]
    assert sorted(select_structures(sizes, 25)) == [2, 3, 4]  # 22..28
    assert sorted(select_structures(sizes, 25, window=4)) == [2, 3, 4, 5]
    assert sorted(select_structures(sizes, 10, window=0)) == [1]


def test_no_structure_of_the_requested_size_is_a_one_line_error_not_a_fallback():
    sizes = [5, 10, 22, 25, 28, 29, 40]
    with pytest.raises(UserInputError) as caught:
        select_structures(sizes, 60, source="calib.h5")  # nearest is 40: no silent fallback to it
    text = one_line(caught.value)
    assert "calib.h5" in text and "60" in text and "5 to 40" in text and "--atoms" in text
    with pytest.raises(UserInputError) as caught:
        select_structures([], 25, source="empty.h5")
    assert "empty.h5" in one_line(caught.value)


def test_make_workload_picks_the_window_in_a_seeded_order():
    structures = molecules([6, 7, 8, 9, 30, 4, 10])
    workload = make_workload(structures, atoms=7, source="mols")
    assert isinstance(workload, Workload)
    assert sorted(len(s) for s in workload.structures) == [4, 6, 7, 8, 9, 10]  # 30 is outside ±3
    assert workload.target_atoms == 7 and workload.source == "mols"
    assert all(any(s is t for t in structures) for s in workload.structures)  # the structures themselves
    again = make_workload(structures, atoms=7, source="mols")
    assert [len(s) for s in again.structures] == [len(s) for s in workload.structures]  # deterministic
    orders = {tuple(len(s) for s in make_workload(structures, atoms=7, seed=k).structures) for k in range(6)}
    assert len(orders) > 1  # the seed changes the order
    assert workload.mean_atoms == pytest.approx(np.mean([4, 6, 7, 8, 9, 10]))
    described = workload.describe()
    assert described == {"source": "mols", "target_atoms": 7, "structures": 6, "min_atoms": 4, "max_atoms": 10,
                         "mean_atoms": round(float(np.mean([4, 6, 7, 8, 9, 10])), 2)}
    assert workload.periodic == 0 and "periodic" not in described
    with pytest.raises(UserInputError, match="mols has no structures of 50"):
        make_workload(structures, atoms=50, source="mols")


def test_load_workload_reads_hdf5_and_periodic_ase_files(tmp_path, calib_file):
    import ase.io

    workload = load_workload(20, calib_file)
    assert sorted(len(s) for s in workload.structures) == [17, 20, 23]  # conftest's calib sizes within ±3
    assert workload.source == str(calib_file) and workload.periodic == 0
    cells = periodic_structures(0)  # 4, 1, 2, 16, 12 (slab) and 13 (cluster) atoms
    path = tmp_path / "cells.extxyz"
    ase.io.write(path, cells, format="extxyz")
    workload = load_workload(14, path)
    assert sorted(len(s) for s in workload.structures) == [12, 13, 16]
    assert workload.periodic == 2  # the alloy and the slab; the cluster is not periodic
    assert workload.describe()["periodic"] == 2
    slab = next(s for s in workload.structures if len(s) == 12)
    np.testing.assert_array_equal(slab.pbc, [True, True, False])
    with pytest.raises(UserInputError) as caught:
        load_workload(100, path)
    assert str(path) in one_line(caught.value)
    with pytest.raises(UserInputError, match="does not exist"):
        load_workload(20, tmp_path / "missing.xyz")


# ------------------------------------------------------------------------------------------------------ pools


@pytest.fixture(scope="module")
def workload() -> Workload:
    return make_workload(molecules([6, 7, 8, 9, 30], seed=3), atoms=7)


def test_pool_entries_are_distinct_and_never_repeat_consecutively(workload):
    for batch in (1, 3, 5):
        pool = make_pool(workload, batch, CUTOFF, copies=8)
        assert len(pool) == 8 and pool.batch_size == batch
        for i in range(len(pool)):
            for j in range(i + 1, len(pool)):
                a, b = pool.entries[i].inputs.vectors, pool.entries[j].inputs.vectors
                assert a.shape != b.shape or not torch.equal(a, b)
        previous = None
        for _ in range(3 * len(pool)):
            entry = pool.next()
            assert isinstance(entry, PoolEntry) and entry.batch.structures == batch
            if previous is not None:
                assert entry is not previous
                assert not np.array_equal(entry.batch.positions[:3], previous.batch.positions[:3])
            previous = entry
        seen = [pool.next() for _ in range(len(pool))]
        assert len({id(e) for e in seen}) == len(pool)  # a full rotation visits every entry once


def test_pool_cycles_the_workload_and_rattles_every_copy(workload):
    batch, m = 3, len(workload.structures)
    pool = make_pool(workload, batch, CUTOFF, copies=8, seed=0)
    for k, entry in enumerate(pool.entries):
        expected = [workload.structures[(k * batch + j) % m] for j in range(batch)]  # copy k starts k batches on
        assert np.diff(entry.batch.offsets).tolist() == [len(s) for s in expected]
        np.testing.assert_array_equal(entry.batch.numbers, np.concatenate([s.numbers for s in expected]))
        shift = entry.batch.positions - np.concatenate([s.positions for s in expected])
        assert 0 < np.abs(shift).max() < 10 * RATTLE_SIGMA  # rattled, not moved
        assert np.std(shift) == pytest.approx(RATTLE_SIGMA, rel=0.5)
    assert pool.atoms_per_structure == pytest.approx(
        np.mean([len(workload.structures[(k * batch + j) % m]) for k in range(8) for j in range(batch)]))
    assert len(pool.neighbour_seconds) == 8 and all(t > 0 for t in pool.neighbour_seconds)
    assert pool.slots == max(e.batch.slots for e in pool.entries)
    # another seed rattles differently; the same seed reproduces the pool
    same = make_pool(workload, batch, CUTOFF, copies=8, seed=0)
    other = make_pool(workload, batch, CUTOFF, copies=8, seed=1)
    np.testing.assert_array_equal(same.entries[0].batch.positions, pool.entries[0].batch.positions)
    assert not np.array_equal(other.entries[0].batch.positions, pool.entries[0].batch.positions)


def test_pool_neighbour_lists_are_built_and_match_the_graph_inputs(workload):
    pool = make_pool(workload, 2, CUTOFF, copies=4)
    for entry in pool.entries:
        batch, inputs = entry.batch, entry.inputs
        assert isinstance(inputs, GraphInputs)
        fresh = GraphInputs.from_batch(batch)
        for a, b in zip(inputs.tensors(), fresh.tensors()):
            assert torch.equal(a, b)
        assert inputs.vectors.dtype == torch.float32 and inputs.numbers.dtype == torch.int64
        assert inputs.atoms == batch.atoms and inputs.slots == batch.slots
        vectors = batch.vectors()
        length = np.linalg.norm(vectors, axis=-1)
        real = np.arange(batch.slots)[None, :] < batch.degree[:, None]
        assert (length[real] <= CUTOFF).all() and (length[real] > 0).all()
        own = np.arange(batch.atoms)[:, None].repeat(batch.slots, 1)
        assert (batch.neighbours[~real] == own[~real]).all()  # padding slots point at their own atom
        assert (length[~real] >= PADDING_DISTANCE - 1).all()  # ... beyond the cutoff
        # every pair within the cutoff of the same structure, counted by brute force, has a slot
        for k in range(batch.structures):
            lo, hi = batch.offsets[k], batch.offsets[k + 1]
            r = batch.positions[lo:hi]
            d = np.linalg.norm(r[:, None] - r[None], axis=-1)
            np.testing.assert_array_equal(batch.degree[lo:hi], ((d <= CUTOFF) & (d > 0)).sum(1))
        # reverse slots: j's slot m' holds i
        flat = batch.neighbours.reshape(-1)
        rows = np.repeat(np.arange(batch.atoms), batch.slots).reshape(batch.atoms, batch.slots)
        assert (flat[batch.reverse][real] == rows[real]).all()
        assert (batch.reverse // batch.slots == batch.neighbours)[real].all()


def test_periodic_structures_get_image_slots_in_the_pool():
    cu = Structure.of([29] * 4, np.array([[0, 0, 0], [0, 1.8, 1.8], [1.8, 0, 1.8], [1.8, 1.8, 0]]),
                      np.eye(3) * 3.61, True)
    pool = make_pool(Workload([cu, cu], 4), 1, CUTOFF, copies=2, sigma=0.0)
    batch = pool.entries[0].batch
    assert batch.degree.min() > 3 * len(cu)  # a 3.61 Å cell: many images within 5 Å
    np.testing.assert_array_equal(batch.positions, cu.positions)  # sigma 0: no rattle


def test_pool_refusals_and_device_copy(workload):
    with pytest.raises(UserInputError, match="batch size must be positive"):
        make_pool(workload, 0, CUTOFF)
    assert len(make_pool(workload, 1, CUTOFF, copies=1)) == 2  # never fewer than two distinct inputs
    pool = make_pool(workload, 1, CUTOFF, copies=2)
    with pytest.raises(ValueError):
        InputPool(pool.entries[:1], 7.0, [0.0])
    moved = pool.to("cpu")
    assert len(moved) == len(pool) and moved.batch_size == 1
    assert moved.entries[0].batch is pool.entries[0].batch
    assert torch.equal(moved.entries[1].inputs.vectors, pool.entries[1].inputs.vectors)
