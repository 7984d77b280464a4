"""What a sweep measures: structures of about the requested size, and pools of distinct prepared batches.

A pool holds `copies` batches of `batch_size` structures cycled from the workload, each structure rattled
independently, with its neighbour list built beforehand; consecutive calls never get the same input, and
no call times the neighbour search (measured separately, `neighbour_seconds`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import UserInputError
from ..runtime.neighbours import NeighbourBatch, Structure, neighbour_batch, structures_of
from ..targets.base import GraphInputs

RATTLE_SIGMA = 0.01  # Å


def select_structures(sizes: Sequence[int], atoms: int, window: int = 3, source: str = "the workload file"
                      ) -> np.ndarray:
    """Indices of structures with |size - atoms| <= window; none is a one-line error naming the sizes there are."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if len(sizes) == 0:
        raise UserInputError(f"{source} holds no structures to benchmark with")
    near = np.flatnonzero(np.abs(sizes - int(atoms)) <= window)
    if len(near) == 0:
        raise UserInputError(f"{source} has no structures of {atoms} ± {window} atoms (it has {sizes.min()} to "
                             f"{sizes.max()}); give --atoms within that range or --structures with such structures")
    return near


@dataclass
class Workload:
    """The structures a sweep uses, chosen once."""

    structures: list[Structure]
    target_atoms: int
    source: str = ""

    @property
    def periodic(self) -> int:
        return sum(s.periodic for s in self.structures)

    @property
    def mean_atoms(self) -> float:
        return float(np.mean([len(s) for s in self.structures]))

    def describe(self) -> dict[str, Any]:
        sizes = [len(s) for s in self.structures]
        described = {"source": self.source, "target_atoms": self.target_atoms, "structures": len(sizes),
                     "min_atoms": int(min(sizes)), "max_atoms": int(max(sizes)), "mean_atoms": round(self.mean_atoms, 2)}
        if self.periodic:
            described["periodic"] = self.periodic
        return described


def make_workload(structures: Sequence[Structure], atoms: int, window: int = 3, seed: int = 0,
                  source: str = "") -> Workload:
    """Pick structures of about `atoms` atoms (see `select_structures`) in a seeded order."""
    chosen = select_structures([len(s) for s in structures], atoms, window, source or "the workload file")
    chosen = np.random.default_rng(seed).permutation(chosen)
    return Workload([structures[int(i)] for i in chosen], int(atoms), source)


def load_workload(atoms: int, path: Path, seed: int = 0) -> Workload:
    """A workload from a structure file (deploycc HDF5 or anything ASE reads)."""
    from ..data.schema import read_structures

    return make_workload(structures_of(read_structures(Path(path))), atoms, seed=seed, source=str(path))


@dataclass
class PoolEntry:
    """One prepared call: the host batch and its graph inputs (on the pool's device)."""

    batch: NeighbourBatch
    inputs: GraphInputs


class InputPool:
    """Distinct prepared batches, handed out in rotation: consecutive calls never get the same input."""

    def __init__(self, entries: list[PoolEntry], atoms_per_structure: float, neighbour_seconds: list[float]) -> None:
        if len(entries) < 2:
            raise ValueError("an input pool needs at least two entries")
        self.entries = entries
        self.atoms_per_structure = atoms_per_structure
        self.neighbour_seconds = neighbour_seconds
        self._next = 0

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def batch_size(self) -> int:
        return self.entries[0].batch.structures

    @property
    def slots(self) -> int:
        return max(e.batch.slots for e in self.entries)

    def next(self) -> PoolEntry:
        entry = self.entries[self._next]
        self._next = (self._next + 1) % len(self.entries)
        return entry

    def __iter__(self) -> Iterator[PoolEntry]:
        while True:
            yield self.next()

    def to(self, device: str) -> "InputPool":
        moved = [PoolEntry(e.batch, e.inputs.to(device)) for e in self.entries]
        return InputPool(moved, self.atoms_per_structure, self.neighbour_seconds)


def make_pool(workload: Workload, batch_size: int, cutoff: float, copies: int = 8, sigma: float = RATTLE_SIGMA,
              seed: int = 0) -> InputPool:
    """`copies` (>= 8 recommended) batches of `batch_size` structures cycled from the workload, each structure
    rattled independently (Gaussian, `sigma` Å); copy k starts k batches further along the cycle."""
    if batch_size < 1:
        raise UserInputError(f"batch size must be positive, got {batch_size}")
    copies = max(2, int(copies))
    rng = np.random.default_rng([seed, batch_size])
    m = len(workload.structures)
    entries, atoms, seconds = [], [], []
    for k in range(copies):
        picks = [workload.structures[(k * batch_size + j) % m] for j in range(batch_size)]
        rattled = [replace(s, positions=s.positions + rng.normal(0.0, sigma, s.positions.shape)) for s in picks]
        started = time.perf_counter()
        batch = neighbour_batch(rattled, cutoff)
        seconds.append(time.perf_counter() - started)
        entries.append(PoolEntry(batch, GraphInputs.from_batch(batch)))
        atoms.extend(len(s) for s in picks)
    return InputPool(entries, float(np.mean(atoms)), seconds)
