"""The checks every structure passes before a model sees it, one declared set of rules for every reader
(the Python API, the ASE calculator, `predict`, `verify`, `md`).

A structure is refused with a one-line UserInputError naming it when it has no atoms, an atomic number
outside 1..max_z or a non-integer one, non-finite positions, a periodic axis with a degenerate or
non-finite cell vector, two atoms (or an atom and a periodic image) closer than the model accepts, an atom
with more neighbours than the artifact's slot profile holds, or (policy "refuse") an element absent from
the training data.  Policy "warn" emits UnseenElementWarning instead, "allow" says nothing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..errors import UnseenElementWarning, UserInputError
from .neighbours import HalfList, Structure, half_list

UNSEEN_POLICIES = ("warn", "refuse", "allow")
MIN_DISTANCE = 0.5  # Å: closer pairs than any chemistry the shipped training sets hold (H2 is 0.74 Å)
# Beyond these the neighbour search (vesin's cell grid) can crash the process with a floating-point
# exception, and float64 positions resolve no better than 1e-7 Å: no atomistic system comes near either.
MAX_EXTENT = 1e5  # Å, the span of a structure's positions along any axis (10 µm)
MAX_COORDINATE = 1e9  # Å from the origin


def check_unseen_policy(policy: str) -> str:
    if policy not in UNSEEN_POLICIES:
        raise UserInputError(f"unseen_elements must be one of {', '.join(UNSEEN_POLICIES)}, got '{policy}'")
    return policy


def formula(numbers: np.ndarray) -> str:
    """Hill formula of atomic numbers; never fails (numbers ASE has no symbol for are written Z<n>)."""
    from ase.data import chemical_symbols
    from ase.symbols import Symbols

    z = np.asarray(numbers, dtype=np.int64)
    if len(z) and (z.min() < 0 or z.max() >= len(chemical_symbols)):
        counts = dict(zip(*np.unique(z, return_counts=True)))
        return "".join(f"Z{int(k)}" + (f"x{int(n)}" if n > 1 else "") for k, n in counts.items())
    return Symbols(z).get_chemical_formula()


@dataclass(frozen=True)
class Rules:
    """What a model accepts."""

    label: str  # e.g. "tiny/onnx", used in messages
    max_z: int
    cutoff: float
    elements: frozenset[int] | None = None  # training elements; None = unknown (no check)
    unseen_elements: str = "warn"
    min_distance: float = MIN_DISTANCE
    max_slots: int | None = None  # neighbours per atom the artifact holds (None = any)

    @classmethod
    def make(cls, label: str, max_z: int, cutoff: float, elements: Iterable[int] | None = None,
             unseen_elements: str = "warn", max_slots: int | None = None) -> "Rules":
        check_unseen_policy(unseen_elements)
        known = None if elements is None else frozenset(int(e) for e in elements)
        return cls(label, int(max_z), float(cutoff), known, unseen_elements, MIN_DISTANCE, max_slots)


def as_structure(item, where: str) -> Structure:
    """An ase.Atoms (or a Structure) as a Structure; anything else is a one-line error."""
    if isinstance(item, Structure):
        return item
    try:
        from ase import Atoms
    except ImportError:  # pragma: no cover - ase is a dependency
        Atoms = ()
    if not isinstance(item, Atoms):
        raise UserInputError(f"{where} is a {type(item).__name__}, not an ase.Atoms (give a list of ase.Atoms)")
    numbers = np.asarray(item.numbers)
    return Structure.of(numbers, item.positions, item.cell.array, item.pbc)


def label_of(where: str, numbers: np.ndarray) -> str:
    return f"{where} ({formula(numbers)})" if len(numbers) else where


def check_structure(structure: Structure, where: str, rules: Rules) -> None:
    """Atoms, atomic numbers, positions, cell and elements of one structure."""
    z = structure.numbers
    if len(z) == 0:
        raise UserInputError(f"{where} has no atoms")
    name = label_of(where, z)
    if z.min() < 1 or z.max() > rules.max_z:
        bad = int(z.max() if z.max() > rules.max_z else z.min())
        raise UserInputError(f"{name} has atomic number {bad} outside 1..{rules.max_z}")
    if not np.all(np.isfinite(structure.positions)):
        raise UserInputError(f"{name} has NaN or infinite positions")
    check_extent(structure.positions, name)
    if structure.periodic:
        check_cell(structure, name)
    check_unseen_elements(name, z, rules)


def check_extent(positions: np.ndarray, name: str) -> None:
    """Positions within MAX_COORDINATE of the origin and spanning at most MAX_EXTENT along each axis."""
    farthest = float(np.abs(positions).max())
    if farthest > MAX_COORDINATE:
        raise UserInputError(f"{name} has a coordinate of {farthest:.3g} Å, beyond the {MAX_COORDINATE:.0e} Å "
                             "deploycc accepts: check the units, or move the structure to the origin")
    span = float((positions.max(axis=0) - positions.min(axis=0)).max())
    if span > MAX_EXTENT:
        raise UserInputError(f"{name} spans {span:.3g} Å, more than the {MAX_EXTENT:.0e} Å deploycc accepts: "
                             "check the units, or split it into separate structures")


def check_cell(structure: Structure, name: str) -> None:
    """Finite, non-degenerate lattice vectors along the periodic axes."""
    cell, pbc = structure.cell, structure.pbc
    if not np.all(np.isfinite(cell)):
        raise UserInputError(f"{name} is periodic but its cell has NaN or infinite entries")
    periodic = cell[pbc]
    if np.linalg.norm(periodic, axis=1).max() > MAX_EXTENT:
        raise UserInputError(f"{name} is periodic but has a lattice vector longer than the {MAX_EXTENT:.0e} Å "
                             "deploycc accepts: check the units")
    gram = periodic @ periodic.T
    if np.any(np.linalg.norm(periodic, axis=1) < 1e-6) or np.linalg.det(gram) < 1e-6 * np.prod(np.diag(gram)):
        raise UserInputError(f"{name} is periodic but its cell has zero volume (degenerate lattice vectors)")


def check_unseen_elements(name: str, numbers: np.ndarray, rules: Rules) -> None:
    """Warn about (or refuse, or allow) elements absent from the model's training data."""
    if rules.elements is None or rules.unseen_elements == "allow":
        return
    from ase.data import chemical_symbols

    unseen = sorted({int(z) for z in np.unique(numbers)} - rules.elements)
    if not unseen:
        return
    names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unseen)
    message = f"{name} contains {names}, absent from the training data of {rules.label}: its results are extrapolation"
    if rules.unseen_elements == "refuse":
        raise UserInputError(f"{message}; use unseen_elements='warn' or 'allow' to run it anyway")
    warnings.warn(f"{message} (unseen_elements='refuse' makes this an error, 'allow' silences it)",
                  UnseenElementWarning, stacklevel=5)


def check_neighbours(structure: Structure, half: HalfList, where: str, rules: Rules,
                     list_cutoff: float | None = None) -> None:
    """No pair closer than the model accepts; no atom with more neighbours (within `list_cutoff`, default
    the model's cutoff) than the artifact holds."""
    if len(half.i):
        distances = half.distances(structure.positions)
        k = int(np.argmin(distances))
        if distances[k] < rules.min_distance:
            image = " (periodic images)" if np.any(half.shifts[k] != 0) else ""
            raise UserInputError(f"{label_of(where, structure.numbers)} has atoms {half.i[k]} and {half.j[k]}{image} "
                                 f"{distances[k]:.3g} Å apart, closer than the {rules.min_distance:g} Å "
                                 f"{rules.label} accepts; remove the duplicate atom or fix the geometry")
    if rules.max_slots is not None and len(half.i):
        degree = half.degree(len(structure))
        if degree.max() > rules.max_slots:
            atom = int(np.argmax(degree))
            reach = rules.cutoff if list_cutoff is None else list_cutoff
            raise UserInputError(f"{label_of(where, structure.numbers)}: atom {atom} has {int(degree.max())} "
                                 f"neighbours within {reach:g} Å; {rules.label} holds at most "
                                 f"{rules.max_slots} (its neighbours profile): is the structure compressed?")


def validated(item, where: str, rules: Rules, list_cutoff: float | None = None) -> tuple[Structure, HalfList]:
    """The structure of `item` and its half list, after every check."""
    structure = as_structure(item, where)
    check_structure(structure, where, rules)
    half = half_list(structure, rules.cutoff if list_cutoff is None else list_cutoff)
    check_neighbours(structure, half, where, rules, list_cutoff)
    return structure, half
