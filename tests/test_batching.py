"""Dense padded batches: pad, pad_forces and size-bucketed batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploycc.batching import pad, pad_forces, size_batches

torch.set_num_threads(1)


def structures(seed: int, sizes=(3, 1, 7, 5)):
    rng = np.random.default_rng(seed)
    numbers = [rng.integers(1, 20, size=n) for n in sizes]
    positions = [rng.normal(size=(n, 3)) for n in sizes]  # float64 in
    return numbers, positions


def test_pad_shapes_dtypes_and_values():
    numbers, positions = structures(0)
    z, r = pad(numbers, positions)
    assert z.shape == (4, 7) and r.shape == (4, 7, 3)
    assert z.dtype == torch.int64 and r.dtype == torch.float32
    for k, (zk, rk) in enumerate(zip(numbers, positions)):
        n = len(zk)
        assert torch.equal(z[k, :n], torch.from_numpy(zk.astype(np.int64)))
        assert torch.equal(r[k, :n], torch.from_numpy(rk.astype(np.float32)))
        assert torch.equal(z[k, n:], torch.zeros(7 - n, dtype=torch.int64))  # 0 marks padding
        assert torch.equal(r[k, n:], torch.zeros(7 - n, 3))
    assert ((z > 0).sum(1).tolist()) == [3, 1, 7, 5]


def test_pad_to_explicit_width():
    numbers, positions = structures(1)
    z, r = pad(numbers, positions, n_atoms=12)
    assert z.shape == (4, 12) and r.shape == (4, 12, 3)
    assert ((z > 0).sum(1).tolist()) == [3, 1, 7, 5]
    assert not r[:, 7:].any() and not z[:, 7:].any()
    z2, r2 = pad(numbers, positions)
    assert torch.equal(z[:, :7], z2) and torch.equal(r[:, :7], r2)


def test_pad_single_structure_and_independence_from_inputs():
    numbers, positions = structures(2, sizes=(4,))
    z, r = pad(numbers, positions)
    assert z.shape == (1, 4)
    r[0, 0, 0] = 123.0  # the returned tensors own their memory
    assert positions[0][0, 0] != 123.0


def test_pad_forces():
    _, forces = structures(3)
    f = pad_forces(forces, 9)
    assert f.shape == (4, 9, 3) and f.dtype == torch.float32
    for k, fk in enumerate(forces):
        n = len(fk)
        assert torch.equal(f[k, :n], torch.from_numpy(fk.astype(np.float32)))
        assert torch.equal(f[k, n:], torch.zeros(9 - n, 3))


def _check_partition(batches, n, batch_size):
    flat = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    assert sorted(flat.tolist()) == list(range(n))  # every index exactly once
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert sum(len(b) < batch_size for b in batches) <= 1  # at most one partial batch
    assert len(batches) == -(-n // batch_size)


@pytest.mark.parametrize("n,batch_size", [(1, 4), (10, 3), (64, 16), (100, 7), (5, 50)])
def test_size_batches_partition_without_rng(n, batch_size):
    sizes = np.random.default_rng(n).integers(1, 40, size=n)
    batches = size_batches(sizes, batch_size)
    _check_partition(batches, n, batch_size)
    # deterministic and sorted by size: batch k holds the k-th run of the size-sorted indices
    ordered = np.concatenate(batches)
    assert np.all(np.diff(sizes[ordered]) >= 0)
    again = size_batches(sizes, batch_size)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_size_batches_partition_with_rng(seed):
    sizes = np.random.default_rng(10 + seed).integers(1, 60, size=203)
    batches = size_batches(sizes, 16, rng=np.random.default_rng(seed))
    _check_partition(batches, len(sizes), 16)
    same = size_batches(sizes, 16, rng=np.random.default_rng(seed))
    assert all(np.array_equal(a, b) for a, b in zip(batches, same))  # reproducible per seed
    other = size_batches(sizes, 16, rng=np.random.default_rng(seed + 100))
    assert any(not np.array_equal(a, b) for a, b in zip(batches, other))  # shuffled


def test_size_batches_with_rng_keep_padding_low():
    """Bucketing by size: far less padding than random batches of the same size."""
    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 60, size=400)
    padding = lambda bs: sum(int(sizes[b].max()) * len(b) - int(sizes[b].sum()) for b in bs)  # noqa: E731
    bucketed = size_batches(sizes, 16, rng=np.random.default_rng(0))
    perm = rng.permutation(len(sizes))
    random_batches = [perm[k : k + 16] for k in range(0, len(perm), 16)]
    assert padding(bucketed) < 0.25 * padding(random_batches)
    for b in bucketed:  # jitter is +-2, so a batch spans only a narrow size range
        assert int(sizes[b].max() - sizes[b].min()) <= 4 + int(np.ptp(np.sort(sizes))) // 8


def test_size_batches_empty():
    assert size_batches([], 8) == []


def test_pad_and_size_batches_together():
    numbers, positions = structures(6, sizes=(2, 9, 3, 8, 2, 9, 4))
    sizes = [len(z) for z in numbers]
    seen = []
    for batch in size_batches(sizes, 3):
        z, r = pad([numbers[i] for i in batch], [positions[i] for i in batch])
        assert z.shape[1] == max(sizes[i] for i in batch)
        for row, i in enumerate(batch):
            assert int((z[row] > 0).sum()) == sizes[i]
            assert torch.allclose(r[row, : sizes[i]], torch.from_numpy(positions[i]).float())
        seen.extend(batch.tolist())
    assert sorted(seen) == list(range(len(numbers)))
