"""Neighbour lists for the model's padded layout, from vesin (a cell-list library: O(N), periodic cells,
mixed boundary conditions, images of small cells).

`neighbour_batch(structures, cutoff)` computes a half list per structure (vesin), mirrors it into a full
list whose reverse pairs are known by construction, and lays it out as the [A, M] slot matrices the model
takes (deploycc/model/student.py): slots sorted by atom, M the largest neighbour count of the request,
padding slots pointing at their own atom with a pair vector longer than the cutoff.  Pair vectors are
formed in float64 from positions and image shifts (`NeighbourBatch.vectors`), so coordinates far from the
origin lose no precision before the float32 cast.

`NeighbourCache` keeps one structure's list between MD steps: built with cutoff + skin, it is rebuilt only
when an atom has moved more than half the skin (a Verlet list); slots beyond the cutoff contribute zero.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ..errors import UserInputError

# Length of the pair vector of a padding slot (Å): beyond every model's cutoff + skin, so its envelope, basis
# and every gradient through it are exactly zero, yet small enough for any float format.
PADDING_DISTANCE = 100.0


@dataclass(frozen=True)
class Structure:
    """One structure as the runtime sees it: float64 positions, a [3, 3] cell (rows) and pbc flags."""

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray

    @classmethod
    def of(cls, numbers, positions, cell=None, pbc=None) -> "Structure":
        cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64).reshape(3, 3)
        pbc = np.zeros(3, dtype=bool) if pbc is None else np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
        numbers = np.asarray(numbers).reshape(-1)
        if numbers.dtype.kind not in "iu":
            if numbers.dtype.kind not in "fb" or not np.all(np.isfinite(numbers)) or np.any(numbers % 1 != 0):
                raise UserInputError(f"atomic numbers must be integers, got {numbers[:6].tolist()}")
        return cls(numbers.astype(np.int64),
                   np.asarray(positions, dtype=np.float64).reshape(-1, 3), cell, pbc)

    @classmethod
    def from_atoms(cls, atoms) -> "Structure":
        return cls.of(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)

    @property
    def periodic(self) -> bool:
        return bool(self.pbc.any())

    def __len__(self) -> int:
        return len(self.numbers)


@dataclass
class NeighbourBatch:
    """Structures concatenated atom-wise with their padded neighbour slots (see the module docstring)."""

    numbers: np.ndarray  # int64 [A]
    positions: np.ndarray  # float64 [A, 3]
    neighbours: np.ndarray  # int64 [A, M]
    reverse: np.ndarray  # int64 [A, M]
    shifts: np.ndarray | None  # float64 [A, M, 3]: image shift of each slot; None when no structure is periodic
    offsets: np.ndarray  # int64 [S + 1]: structure k is atoms offsets[k]:offsets[k + 1]
    cells: np.ndarray  # float64 [S, 3, 3]
    pbc: np.ndarray  # bool [S, 3]
    degree: np.ndarray  # int64 [A]: real slots per atom (within cutoff + skin)

    @property
    def atoms(self) -> int:
        return len(self.numbers)

    @property
    def slots(self) -> int:
        return int(self.neighbours.shape[1])

    @property
    def structures(self) -> int:
        return len(self.offsets) - 1

    def vectors(self, positions: np.ndarray | None = None) -> np.ndarray:
        """Slot pair vectors r_j + shift - r_i [A, M, 3], float64 (for `positions`, default the batch's);
        padding slots get (PADDING_DISTANCE, 0, 0)."""
        r = self.positions if positions is None else np.asarray(positions, dtype=np.float64)
        vectors = r[self.neighbours]
        vectors -= r[:, None, :]
        if self.shifts is not None:
            vectors += self.shifts
        vectors[self.padding(), 0] = PADDING_DISTANCE
        return vectors

    def padding(self) -> np.ndarray:
        """[A, M] True on padding slots (each atom's real slots come first)."""
        return np.arange(self.slots)[None, :] >= self.degree[:, None]

    def select(self, first: int, last: int) -> "NeighbourBatch":
        """Structures first..last-1 as a batch of their own, slot width trimmed to their widest atom."""
        a0, a1 = int(self.offsets[first]), int(self.offsets[last])
        m = self.slots
        width = max(int(self.degree[a0:a1].max(initial=0)), 1)
        local = self.reverse[a0:a1, :width] - a0 * m
        return NeighbourBatch(
            numbers=self.numbers[a0:a1], positions=self.positions[a0:a1],
            neighbours=self.neighbours[a0:a1, :width] - a0, reverse=(local // m) * width + local % m,
            shifts=None if self.shifts is None else self.shifts[a0:a1, :width],
            offsets=self.offsets[first : last + 1] - a0, cells=self.cells[first:last], pbc=self.pbc[first:last],
            degree=self.degree[a0:a1])

    def split(self, max_atoms: int) -> list["NeighbourBatch"]:
        """Consecutive groups of whole structures of at most `max_atoms` atoms each (a larger structure alone)."""
        groups, first = [], 0
        for k in range(1, self.structures + 1):
            if k == self.structures or self.offsets[k + 1] - self.offsets[first] > max_atoms:
                groups.append(self.select(first, k))
                first = k
        return groups

    def per_structure(self, per_atom: np.ndarray) -> np.ndarray:
        """Sums of a per-atom array over each structure's atoms, in float64: [S, ...]."""
        values = np.asarray(per_atom, dtype=np.float64)
        out = np.add.reduceat(values, self.offsets[:-1], axis=0) if len(values) else values[:0]
        empty = self.offsets[1:] == self.offsets[:-1]
        out[empty] = 0.0  # reduceat copies the next element for empty segments
        return out


@dataclass(frozen=True)
class HalfList:
    """Each pair within the list cutoff once: atoms i, j and the image shift vector of j (Å)."""

    i: np.ndarray
    j: np.ndarray
    shifts: np.ndarray

    def degree(self, atoms: int) -> np.ndarray:
        """Neighbours per atom (both directions of every pair)."""
        return np.bincount(np.concatenate([self.i, self.j]), minlength=atoms).astype(np.int64)

    def distances(self, positions: np.ndarray) -> np.ndarray:
        return np.sqrt(((positions[self.j] + self.shifts - positions[self.i]) ** 2).sum(1))


def search_cell(structure: Structure) -> np.ndarray:
    """The cell handed to the neighbour search: periodic axes as given, open axes completed by unit vectors
    orthogonal to them (images are only ever taken along periodic axes)."""
    from ase.geometry import complete_cell

    return complete_cell(np.where(structure.pbc[:, None], structure.cell, 0.0))


def half_list(structure: Structure, cutoff: float) -> HalfList:
    """Pairs within `cutoff` once each (vesin's half list)."""
    import vesin

    if len(structure) == 0:
        return HalfList(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)))
    if not structure.periodic:
        i, j = vesin.NeighborList(cutoff=float(cutoff), full_list=False).compute(
            structure.positions, np.zeros((3, 3)), False, "ij")
        return HalfList(i.astype(np.int64), j.astype(np.int64), np.zeros((len(i), 3)))
    cell = search_cell(structure)
    i, j, s = vesin.NeighborList(cutoff=float(cutoff), full_list=False).compute(
        structure.positions, cell, [bool(p) for p in structure.pbc], "ijS")
    return HalfList(i.astype(np.int64), j.astype(np.int64), s.astype(np.float64) @ cell)


def neighbour_batch(structures: Sequence[Structure], cutoff: float, skin: float = 0.0) -> NeighbourBatch:
    """The padded neighbour layout of `structures` for a model with this `cutoff` (lists of cutoff + skin)."""
    if not cutoff + skin < 0.5 * PADDING_DISTANCE:
        raise UserInputError(f"cutoff + skin {cutoff + skin:g} Å is too large (at most {0.5 * PADDING_DISTANCE:g} Å)")
    return assemble(structures, [half_list(s, cutoff + skin) for s in structures])


def assemble(structures: Sequence[Structure], halves: Sequence[HalfList]) -> NeighbourBatch:
    """One batch of structures from their half lists (atoms concatenated, indices offset)."""
    sizes = np.array([len(s) for s in structures], dtype=np.int64)
    offsets = np.zeros(len(structures) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    empty = np.zeros(0, np.int64)
    i = np.concatenate([h.i + o for h, o in zip(halves, offsets[:-1])] + [empty])
    j = np.concatenate([h.j + o for h, o in zip(halves, offsets[:-1])] + [empty])
    periodic = any(x.periodic for x in structures)
    s = np.concatenate([h.shifts for h in halves] + [np.zeros((0, 3))]) if periodic else None
    neighbours, reverse, slot_shifts, degree = slot_matrices(int(offsets[-1]), i, j, s)
    return NeighbourBatch(
        numbers=np.concatenate([x.numbers for x in structures] + [empty]),
        positions=np.concatenate([x.positions for x in structures] + [np.zeros((0, 3))]),
        neighbours=neighbours, reverse=reverse, shifts=slot_shifts, offsets=offsets,
        cells=np.stack([x.cell for x in structures]) if len(structures) else np.zeros((0, 3, 3)),
        pbc=np.stack([x.pbc for x in structures]) if len(structures) else np.zeros((0, 3), bool), degree=degree)


def slot_matrices(atoms: int, i: np.ndarray, j: np.ndarray, shifts: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """(neighbours, reverse, shifts [A, M, 3] or None, degree) from a half list: pair e and its mirror e + H
    are each other's reverse, so no search is needed; slots are filled in a stable sort by atom."""
    h = len(i)
    source = np.concatenate([i, j])
    target = np.concatenate([j, i])
    degree = np.bincount(source, minlength=atoms).astype(np.int64)
    m = max(int(degree.max()) if atoms else 0, 1)
    order = np.argsort(source, kind="stable")
    start = np.zeros(atoms + 1, dtype=np.int64)
    np.cumsum(degree, out=start[1:])
    sorted_source = source[order]
    slot = np.empty(2 * h, dtype=np.int64)
    slot[order] = sorted_source * m + (np.arange(2 * h) - start[sorted_source])
    partner = np.concatenate([np.arange(h, 2 * h), np.arange(h)])
    neighbours = np.repeat(np.arange(atoms, dtype=np.int64), m).reshape(atoms, m)
    reverse = np.arange(atoms * m, dtype=np.int64).reshape(atoms, m)
    neighbours.reshape(-1)[slot] = target
    reverse.reshape(-1)[slot] = slot[partner]
    slot_shifts = None
    if shifts is not None:
        slot_shifts = np.zeros((atoms, m, 3))
        slot_shifts.reshape(-1, 3)[slot[:h]] = shifts
        slot_shifts.reshape(-1, 3)[slot[h:]] = -shifts
    return neighbours, reverse, slot_shifts, degree


class NeighbourCache:
    """A Verlet list of one structure: rebuilt only when an atom has moved more than skin / 2 (or the
    numbers, cell or pbc changed); between rebuilds only the pair vectors are recomputed."""

    def __init__(self, cutoff: float, skin: float = 0.0) -> None:
        if not skin >= 0.0:
            raise UserInputError(f"the neighbour-list skin must be >= 0 Å, got {skin}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.batch: NeighbourBatch | None = None
        self.half: HalfList | None = None
        self.reference: Structure | None = None
        self.builds = 0

    def get(self, structure: Structure) -> NeighbourBatch:
        """The batch for `structure` (positions updated), rebuilding the list when it may be stale."""
        if self._stale(structure):
            self.half = half_list(structure, self.cutoff + self.skin)
            self.batch = assemble([structure], [self.half])
            # A copy: a caller that moves the atoms in place must not move the reference too.
            self.reference = replace(structure, positions=structure.positions.copy())
            self.builds += 1
            return self.batch
        assert self.batch is not None
        self.batch.positions = structure.positions
        return self.batch

    def _stale(self, structure: Structure) -> bool:
        ref = self.reference
        if ref is None or self.skin == 0.0:
            return True
        if (len(ref) != len(structure) or not np.array_equal(ref.numbers, structure.numbers)
                or not np.array_equal(ref.cell, structure.cell) or not np.array_equal(ref.pbc, structure.pbc)):
            return True
        moved = np.sqrt(((structure.positions - ref.positions) ** 2).sum(1)).max(initial=0.0)
        return not moved <= 0.5 * self.skin  # NaN positions rebuild (and are refused there)


def structures_of(data) -> list[Structure]:
    """The structures of a dataset (`deploycc.data.schema.Structures`) as runtime Structures."""
    cells = data.cells if data.cells is not None else np.zeros((len(data), 3, 3))
    pbc = data.pbc if data.pbc is not None else np.zeros((len(data), 3), dtype=bool)
    return [Structure.of(z, r, c, p) for z, r, c, p in zip(data.numbers, data.positions, cells, pbc)]
