"""The HDF5 dataset schema: structures concatenated atom-wise, with offsets, labels, provenance and splits.

All lengths in Angstrom, energies in eV, forces in eV/Angstrom.  The datasets are declared once, in `SCHEMA`
(name, dtype kind, shape rule, required or optional, meaning): `read_h5` checks a file against it before
building any structure, and the layout below is rendered from it (`schema_table()`; `schema_table(markdown=True)`
for the docs).  attrs: format_version, energy_unit, length_unit, force_unit, teacher, source, created, generator.

Layout:

{layout}
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from ..errors import UserInputError

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")  # what split_by_group assigns
# Splits a file may also hold: test_md is the test molecules in teacher MD (online distillation's --splits-out).
STORED_SPLITS = SPLITS + ("test_md",)


@dataclass(frozen=True)
class Field:
    """One dataset of the schema.  `kind`: int (whole numbers; an integer dtype, or floats that are whole),
    float (finite numbers; a float or integer dtype) or bool (a bool dtype, or integers 0/1).  `shape`: its
    dimensions, each a number or a symbol: `atoms` (the length of atomic_numbers), `structures` (the length of
    offsets minus one), `structures + 1`, or `n` (any length)."""

    name: str
    kind: str
    shape: tuple[int | str, ...]
    required: bool
    meaning: str

    @property
    def rule(self) -> str:
        """The shape rule as written in messages and docs: `(atoms, 3)`, `(structures,)`."""
        dims = [str(d) for d in self.shape]
        return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


STORED_DTYPES = {"int": "int64", "float": "float64", "bool": "bool"}

SCHEMA: tuple[Field, ...] = (
    Field("atomic_numbers", "int", ("atoms",), True, "atomic number of every atom, 1 to 118"),
    Field("positions", "float", ("atoms", 3), True, "Cartesian positions, finite"),
    Field("offsets", "int", ("structures + 1",), True,
          "structure k is atoms offsets[k]:offsets[k+1]; starts at 0, never decreases, ends at atoms"),
    Field("forces", "float", ("atoms", 3), False, "reference forces, finite (a label)"),
    Field("energies", "float", ("structures",), False, "reference energies, finite (a label)"),
    Field("cells", "float", ("structures", 3, 3), False, "cell vectors as rows, finite (zeros: not periodic)"),
    Field("pbc", "bool", ("structures", 3), False, "periodic along each cell vector"),
    Field("group", "int", ("structures",), False, "molecule / system id (splits never cut a group)"),
    *(Field(f"split/{name}", "int", ("n",), False, "structure indices, each in [0, structures)") for name in STORED_SPLITS),
)
SCHEMA_FIELDS = {f.name: f for f in SCHEMA}


def schema_table(markdown: bool = False) -> str:
    """The layout declared by `SCHEMA`, as indented text (this module's docstring) or a Markdown table."""
    if markdown:
        rows = ["| dataset | dtype | shape | required | meaning |", "|---|---|---|---|---|"]
        rows += [f"| `/{f.name}` | {STORED_DTYPES[f.kind]} | `{f.rule}` | {'yes' if f.required else 'no'} | {f.meaning} |"
                 for f in SCHEMA]
        return "\n".join(rows)
    return "\n".join(f"    /{f.name:<15} {STORED_DTYPES[f.kind]:<8} {f.rule:<19} {'required' if f.required else 'optional'}"
                     f"  {f.meaning}" for f in SCHEMA)


if __doc__:  # rendered from the declaration, so the docs cannot drift from what read_h5 checks
    __doc__ = __doc__.replace("{layout}", schema_table())


@dataclass
class Structures:
    """Structures in memory, in the schema's concatenated layout."""

    numbers: list[np.ndarray]
    positions: list[np.ndarray]
    energies: np.ndarray | None = None
    forces: list[np.ndarray] | None = None
    cells: np.ndarray | None = None
    pbc: np.ndarray | None = None
    group: np.ndarray | None = None
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def has_labels(self) -> bool:
        return self.energies is not None and self.forces is not None

    def subset(self, indices: Iterable[int]) -> "Structures":
        idx = np.asarray(list(indices), dtype=np.int64)
        pick = lambda items: [items[i] for i in idx]  # noqa: E731
        return Structures(
            numbers=pick(self.numbers),
            positions=pick(self.positions),
            energies=None if self.energies is None else self.energies[idx],
            forces=None if self.forces is None else pick(self.forces),
            cells=None if self.cells is None else self.cells[idx],
            pbc=None if self.pbc is None else self.pbc[idx],
            group=None if self.group is None else self.group[idx],
            attrs=dict(self.attrs),
        )

    def split(self, name: str) -> "Structures":
        if name not in self.splits:
            raise UserInputError(f"dataset has no '{name}' split (has: {', '.join(self.splits) or 'none'})")
        return self.subset(self.splits[name])

    def to_atoms(self) -> list:
        """The structures as ase.Atoms (labels attached as a single-point calculator)."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms_list = []
        for k in range(len(self)):
            cell = None if self.cells is None else self.cells[k]
            pbc = False if self.pbc is None else self.pbc[k]
            atoms = Atoms(numbers=self.numbers[k], positions=self.positions[k], cell=cell, pbc=pbc)
            if self.has_labels:
                atoms.calc = SinglePointCalculator(atoms, energy=float(self.energies[k]), forces=self.forces[k])
            atoms_list.append(atoms)
        return atoms_list


def split_by_group(group: np.ndarray, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    """Assign whole groups (molecules) to train/val/test so that no group straddles two splits."""
    rng = np.random.default_rng(seed)
    ids = np.unique(group)
    rng.shuffle(ids)
    n_val = max(1, int(round(fractions[1] * len(ids)))) if len(ids) >= 3 else 0
    n_test = max(1, int(round(fractions[2] * len(ids)))) if len(ids) >= 3 else 0
    val_ids, test_ids = set(ids[:n_val]), set(ids[n_val : n_val + n_test])
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    for k, g in enumerate(group):
        out["val" if g in val_ids else "test" if g in test_ids else "train"].append(k)
    return {name: np.asarray(v, dtype=np.int64) for name, v in out.items()}


def validate(data: Structures, where: str) -> None:
    """Refuse structures that no model can take: empty, NaN/inf, Z out of range, bad labels, bad lengths."""
    if len(data) == 0:
        raise UserInputError(f"{where}: no structures to write")
    if len(data.positions) != len(data):
        raise UserInputError(f"{where}: {len(data)} structures but {len(data.positions)} position arrays")
    if data.energies is not None and len(data.energies) != len(data):
        raise UserInputError(f"{where}: {len(data)} structures but {len(data.energies)} energies")
    if data.forces is not None and len(data.forces) != len(data):
        raise UserInputError(f"{where}: {len(data)} structures but {len(data.forces)} force arrays")
    for k, (z, r) in enumerate(zip(data.numbers, data.positions)):
        if np.shape(r) != (len(z), 3):
            raise UserInputError(f"{where}: structure {k} has {len(z)} atoms but positions of shape {np.shape(r)}")
        if data.forces is not None and np.shape(data.forces[k]) != (len(z), 3):
            raise UserInputError(f"{where}: structure {k} has {len(z)} atoms but forces of shape {np.shape(data.forces[k])}")
        if len(z) == 0:
            raise UserInputError(f"{where}: structure {k} has no atoms")
        if np.any(z <= 0) or np.any(z > 118):
            raise UserInputError(f"{where}: structure {k} has atomic number {int(z[(z <= 0) | (z > 118)][0])}")
        if not np.all(np.isfinite(r)):
            raise UserInputError(f"{where}: structure {k} has NaN or infinite positions")
        if data.forces is not None and not np.all(np.isfinite(data.forces[k])):
            raise UserInputError(f"{where}: structure {k} has NaN or infinite forces")
    if data.energies is not None and not np.all(np.isfinite(data.energies)):
        bad = int(np.flatnonzero(~np.isfinite(data.energies))[0])
        raise UserInputError(f"{where}: structure {bad} has a NaN or infinite energy")


def write_h5(data: Structures, path: Path) -> None:
    """Write atomically: a temporary file in the same folder, renamed when complete."""
    path = Path(path)
    validate(data, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(data)
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(z) for z in data.numbers])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("atomic_numbers", data=np.concatenate(data.numbers).astype(np.int64))
            h5.create_dataset("positions", data=np.concatenate(data.positions).astype(np.float64))
            h5.create_dataset("offsets", data=offsets)
            cells = data.cells if data.cells is not None else np.zeros((n, 3, 3))
            pbc = data.pbc if data.pbc is not None else np.zeros((n, 3), dtype=bool)
            h5.create_dataset("cells", data=np.asarray(cells, dtype=np.float64))
            h5.create_dataset("pbc", data=np.asarray(pbc, dtype=bool))
            group = data.group if data.group is not None else np.arange(n)
            h5.create_dataset("group", data=np.asarray(group, dtype=np.int64))
            if data.energies is not None:
                h5.create_dataset("energies", data=np.asarray(data.energies, dtype=np.float64))
            if data.forces is not None:
                h5.create_dataset("forces", data=np.concatenate(data.forces).astype(np.float64))
            for name, idx in data.splits.items():
                h5.create_dataset(f"split/{name}", data=np.asarray(idx, dtype=np.int64))
            h5.attrs.update({"format_version": SCHEMA_VERSION, "energy_unit": "eV", "length_unit": "Angstrom",
                             "force_unit": "eV/Angstrom"})
            for key, value in data.attrs.items():
                h5.attrs[key] = value if isinstance(value, (int, float, str)) else str(value)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_h5(path: Path) -> Structures:
    """Read a dataset written by `write_h5`, checked against `SCHEMA` first (dtype kinds, shapes, offsets,
    finite values, atomic numbers, split indices): a one-line UserInputError naming the file and the dataset
    for a missing, corrupt, truncated or foreign file, or one that breaks the schema (data/h5reader.py)."""
    from .h5reader import read_checked  # the reader builds on this module's schema and Structures

    return read_checked(path)


def from_atoms(atoms_list: list, group: np.ndarray | None = None, require_labels: bool = False) -> Structures:
    """Structures from ase.Atoms; labels are taken from attached calculators when present."""
    numbers, positions, energies, forces = [], [], [], []
    labelled = True
    for atoms in atoms_list:
        numbers.append(atoms.get_atomic_numbers().astype(np.int64))
        positions.append(atoms.get_positions().astype(np.float64))
        try:
            energies.append(float(atoms.get_potential_energy()))
            forces.append(np.asarray(atoms.get_forces(), dtype=np.float64))
        except Exception:  # no calculator or no results: unlabelled
            labelled = False
    if require_labels and not labelled:
        raise UserInputError("structures carry no energy/forces labels")
    return Structures(
        numbers=numbers,
        positions=positions,
        energies=np.asarray(energies) if labelled else None,
        forces=forces if labelled else None,
        cells=np.asarray([np.asarray(a.get_cell()) for a in atoms_list]),
        pbc=np.asarray([a.get_pbc() for a in atoms_list]),
        group=group,
    )


def existing_structure_file(path: Path) -> Path:
    """`path` as a Path, or a one-line UserInputError when there is no such file."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"structure file {path} does not exist")
    return path


def unreadable(path: Path, exc: Exception) -> UserInputError:
    """The one-line error for a file ASE could not read (ASE raises many exception types)."""
    return UserInputError(f"cannot read {path} with ASE ({type(exc).__name__}: {str(exc)[:100]})")


def read_structures(path: Path) -> Structures:
    """Any supported file: a deploycc HDF5, or anything ASE can read (extxyz, ASE database, ...)."""
    path = existing_structure_file(path)
    if path.suffix in (".h5", ".hdf5"):
        return read_h5(path)
    import ase.io

    try:
        atoms_list = ase.io.read(str(path), index=":")
    except Exception as exc:  # ASE raises many types for unreadable files
        raise unreadable(path, exc) from None
    if not atoms_list:
        raise UserInputError(f"{path} holds no structures")
    return from_atoms(atoms_list)
