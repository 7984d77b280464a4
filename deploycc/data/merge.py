"""One dataset of several: structures concatenated, groups shifted apart, each input's splits kept."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import UserInputError
from .schema import Structures


def merge_datasets(parts: Sequence[Structures], sources: Sequence[str]) -> Structures:
    """`parts` in order as one dataset.  The first part keeps its group numbers; each later part's are shifted
    past the previous parts' so that no two parts share a group, and each split is the union of the parts'
    splits (A's test + B's test, ...), so a split by molecule or system stays one.  Refused in one line when the
    parts' teachers differ or some carry labels and others do not."""
    if len(parts) < 2:
        raise UserInputError("data merge needs at least two datasets")
    _check_compatible(parts, sources)
    labelled = parts[0].has_labels
    merged = Structures(numbers=[z for p in parts for z in p.numbers],
                        positions=[r for p in parts for r in p.positions],
                        energies=np.concatenate([p.energies for p in parts]) if labelled else None,
                        forces=[f for p in parts for f in p.forces] if labelled else None,
                        cells=np.concatenate([_cells(p) for p in parts]),
                        pbc=np.concatenate([_pbc(p) for p in parts]))
    groups, splits, offset, next_group = [], {}, 0, 0
    for part in parts:
        group = np.arange(len(part)) if part.group is None else np.asarray(part.group, dtype=np.int64)
        shifted = group if not groups else group - (int(group.min()) if len(group) else 0) + next_group
        groups.append(shifted)
        next_group = max(next_group, int(shifted.max()) + 1 if len(shifted) else 0)
        for name, idx in part.splits.items():
            splits.setdefault(name, []).append(np.asarray(idx, dtype=np.int64) + offset)
        offset += len(part)
    merged.group = np.concatenate(groups)
    merged.splits = {name: np.concatenate(chunks) for name, chunks in splits.items()}
    merged.attrs = {**parts[0].attrs, "generator": "deploycc data merge", "sources": ", ".join(sources)}
    return merged


def _check_compatible(parts: Sequence[Structures], sources: Sequence[str]) -> None:
    first_teacher = parts[0].attrs.get("teacher")
    for part, source in zip(parts[1:], sources[1:]):
        teacher = part.attrs.get("teacher")
        if teacher != first_teacher:
            raise UserInputError(f"{source} was labelled by {teacher!r}, {sources[0]} by {first_teacher!r}: merge "
                                 "datasets of one teacher")
        if part.has_labels != parts[0].has_labels:
            raise UserInputError(f"{source} and {sources[0]} differ in carrying energy/force labels")


def _cells(part: Structures) -> np.ndarray:
    return np.zeros((len(part), 3, 3)) if part.cells is None else np.asarray(part.cells, dtype=np.float64)


def _pbc(part: Structures) -> np.ndarray:
    return np.zeros((len(part), 3), dtype=bool) if part.pbc is None else np.asarray(part.pbc, dtype=bool)
