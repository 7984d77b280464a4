"""Padding structures into the dense batch layout every model and artifact takes."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def pad(
    numbers: Sequence[np.ndarray], positions: Sequence[np.ndarray], n_atoms: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Atomic numbers int64 [B, N] (0 = padding) and positions float32 [B, N, 3]."""
    width = max(len(z) for z in numbers) if n_atoms is None else n_atoms
    z = np.zeros((len(numbers), width), dtype=np.int64)
    r = np.zeros((len(numbers), width, 3), dtype=np.float32)
    for k, (zk, rk) in enumerate(zip(numbers, positions)):
        z[k, : len(zk)] = zk
        r[k, : len(zk)] = rk
    return torch.from_numpy(z), torch.from_numpy(r)


def pad_forces(forces: Sequence[np.ndarray], n_atoms: int) -> torch.Tensor:
    out = np.zeros((len(forces), n_atoms, 3), dtype=np.float32)
    for k, fk in enumerate(forces):
        out[k, : len(fk)] = fk
    return torch.from_numpy(out)


def size_batches(sizes: Sequence[int], batch_size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Group indices of similar size into batches (little padding); shuffled when `rng` is given."""
    sizes = np.asarray(sizes, dtype=np.float64)
    key = sizes + (rng.uniform(-2.0, 2.0, size=len(sizes)) if rng is not None else 0.0)
    order = np.argsort(key, kind="stable")
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches
