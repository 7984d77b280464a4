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
SPLITS = ("train", "val", "test")


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


_STORED = {"int": "int64", "float": "float64", "bool": "bool"}

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
    *(Field(f"split/{name}", "int", ("n",), False, "structure indices, each in [0, structures)") for name in SPLITS),
)
SCHEMA_FIELDS = {f.name: f for f in SCHEMA}


def schema_table(markdown: bool = False) -> str:
    """The layout declared by `SCHEMA`, as indented text (this module's docstring) or a Markdown table."""
    if markdown:
        rows = ["| dataset | dtype | shape | required | meaning |", "|---|---|---|---|---|"]
        rows += [f"| `/{f.name}` | {_STORED[f.kind]} | `{f.rule}` | {'yes' if f.required else 'no'} | {f.meaning} |"
                 for f in SCHEMA]
        return "\n".join(rows)
    return "\n".join(f"    /{f.name:<15} {_STORED[f.kind]:<8} {f.rule:<19} {'required' if f.required else 'optional'}"
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


# h5py (and HDF5 under it) raise these for files that are corrupt, truncated or hold things it cannot read;
# they are caught only around h5py calls, so a bug in the checks below still shows its traceback.
_H5_FAILURES = (OSError, RuntimeError, KeyError, ValueError, TypeError, MemoryError)
_INT64_MAX = np.iinfo(np.int64).max


def _h5_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:120]


def _kind_name(dtype: np.dtype) -> str:
    """What a dtype holds, in words, for messages."""
    names = {"S": "strings", "U": "strings", "O": "strings or objects", "c": "complex numbers",
             "V": "compound records", "M": "dates", "m": "time deltas", "f": "floats", "i": "integers",
             "u": "integers", "b": "booleans"}
    return f"{names.get(dtype.kind, 'values')} ({dtype})"


def _node(h5, name: str, path: Path):
    """The object at `name` (None if absent); a one-line error if a parent is not a group."""
    current = h5
    parts = name.split("/")
    for depth, part in enumerate(parts):
        if not isinstance(current, h5py.Group):
            parent = "/".join(parts[:depth])
            raise UserInputError(f"{path}: '{parent}' must be a group holding '{name}', got a dataset")
        if part not in current:
            return None
        current = current[part]
    return current


@dataclass(frozen=True)
class _Found:
    """A dataset of the file with its shape and dtype, read from its metadata (no data read yet)."""

    node: Any
    shape: tuple[int, ...]
    dtype: np.dtype


def _checked_dataset(h5, f: Field, path: Path) -> _Found | None:
    """The dataset for `f` (None if absent and optional), its dtype kind checked; shapes come later."""
    try:
        node = _node(h5, f.name, path)
        is_dataset, is_group = isinstance(node, h5py.Dataset), isinstance(node, h5py.Group)
        shape, dtype = (node.shape, node.dtype) if is_dataset else (None, None)
    except _H5_FAILURES as exc:
        raise UserInputError(f"{path}: cannot read '{f.name}' ({_h5_reason(exc)}); the file is corrupt or holds "
                             "a type deploycc cannot read") from None
    if node is None:
        if f.required:
            need = ", ".join(g.name for g in SCHEMA if g.required)
            raise UserInputError(f"{path}: not a deploycc HDF5 file: no '{f.name}' dataset (it needs {need})")
        return None
    if not is_dataset:
        what = "a group" if is_group else f"a {type(node).__name__.lower()}"
        raise UserInputError(f"{path}: '{f.name}' must be a dataset, got {what}")
    if shape is None:
        raise UserInputError(f"{path}: '{f.name}' is an empty dataset (no shape); it must have shape {f.rule}")
    allowed = {"int": "iuf", "float": "fiu", "bool": "biu"}[f.kind]
    if dtype.kind not in allowed:
        want = {"int": "integers", "float": "numbers", "bool": "booleans"}[f.kind]
        raise UserInputError(f"{path}: '{f.name}' must hold {want} ({_STORED[f.kind]}), got {_kind_name(dtype)}")
    return _Found(node, tuple(shape), dtype)


def _shape_text(shape: tuple) -> str:
    if len(shape) == 0:
        return "() (a scalar)"
    return f"({shape[0]},)" if len(shape) == 1 else f"({', '.join(map(str, shape))})"


def _check_shape(f: Field, shape: tuple, sizes: dict[str, int], path: Path) -> None:
    """`shape` against `f`'s rule, with `sizes` giving the symbols (a symbol not in `sizes` is not compared:
    only the number of dimensions is)."""
    want = tuple(sizes.get(d, "n") if isinstance(d, str) else d for d in f.shape)
    ok = len(shape) == len(want) and all(w == "n" or s == w for s, w in zip(shape, want))
    if not ok:
        counts = [f"{sizes[k]} {k}" for k in ("atoms", "structures") if k in sizes
                  and any(k in str(d) for d in f.shape)]
        note = f" (the file has {' and '.join(counts)})" if counts else ""
        raise UserInputError(f"{path}: '{f.name}' must have shape {f.rule}, got {_shape_text(shape)}{note}")


def _read(node, f: Field, path: Path) -> np.ndarray:
    try:
        return np.asarray(node[()])
    except _H5_FAILURES as exc:
        raise UserInputError(f"{path}: cannot read '{f.name}' ({_h5_reason(exc)}); the file is corrupt or "
                             "truncated") from None


def _where(row: int, f: Field, offsets: np.ndarray | None) -> str:
    """`structure k (atom i)` for a row of an atom-wise array, `structure k` for a per-structure one, `entry k`
    for the others (offsets, splits)."""
    if f.shape[0] == "atoms" and offsets is not None:
        k = int(np.searchsorted(offsets, row, side="right") - 1)
        return f"structure {k} (atom {row - int(offsets[k])})"
    return f"structure {row}" if f.shape[0] == "structures" else f"entry {row}"


def _converted(raw: np.ndarray, f: Field, path: Path, offsets: np.ndarray | None) -> np.ndarray:
    """`raw` in the schema's dtype, refusing values that conversion would change (6.5 as an atomic number, NaN,
    2 as a bool, integers beyond int64)."""
    per_row = raw.reshape(raw.shape[0], int(np.prod(raw.shape[1:], dtype=np.int64)))
    if f.kind == "float":
        out = raw.astype(np.float64)
        bad = ~np.isfinite(out.reshape(per_row.shape)).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise UserInputError(f"{path}: '{f.name}' is NaN or infinite at {_where(row, f, offsets)}")
        return out
    if f.kind == "bool":
        if raw.dtype.kind == "b":
            return raw.astype(bool)
        bad = ~np.isin(per_row, (0, 1)).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = per_row[row][~np.isin(per_row[row], (0, 1))][0]
            raise UserInputError(f"{path}: '{f.name}' must hold booleans (or 0/1), got {value} at "
                                 f"{_where(row, f, offsets)}")
        return raw.astype(bool)
    # int
    if raw.dtype.kind == "f":
        whole = np.isfinite(per_row) & (per_row == np.round(per_row)) & (np.abs(per_row) <= 2.0**53)
    elif raw.dtype.kind == "u" and raw.dtype.itemsize == 8:
        whole = per_row <= np.uint64(_INT64_MAX)
    else:
        whole = np.ones(per_row.shape, dtype=bool)
    bad = ~whole.all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = per_row[row][~whole[row]][0]
        raise UserInputError(f"{path}: '{f.name}' must hold whole numbers (int64), got {value:g} at "
                             f"{_where(row, f, offsets)}" if raw.dtype.kind == "f" else
                             f"{path}: '{f.name}' holds {value}, beyond int64, at {_where(row, f, offsets)}")
    return raw.astype(np.int64)


def _check_offsets(offsets: np.ndarray, atoms: int, path: Path) -> None:
    if offsets[0] != 0:
        raise UserInputError(f"{path}: 'offsets' must start at 0, got {offsets[0]}")
    steps = np.diff(offsets)
    if (steps < 0).any():
        k = int(np.flatnonzero(steps < 0)[0])
        raise UserInputError(f"{path}: 'offsets' must never decrease, got {offsets[k]} then {offsets[k + 1]} "
                             f"(entries {k} and {k + 1})")
    if offsets[-1] != atoms:
        where = "past the end of" if offsets[-1] > atoms else "short of"
        raise UserInputError(f"{path}: 'offsets' ends at {offsets[-1]}, {where} the {atoms} atoms of "
                             "'atomic_numbers' and 'positions'")


def _attrs(h5, path: Path) -> dict[str, Any]:
    try:
        items = list(h5.attrs.items())
    except _H5_FAILURES as exc:
        raise UserInputError(f"{path}: cannot read its attributes ({_h5_reason(exc)}); the file is corrupt") from None
    out = {}
    for key, value in items:
        if isinstance(value, np.ndarray) and value.size != 1:
            out[key] = value.tolist()
        else:
            out[key] = value.item() if hasattr(value, "item") else value
    return out


def _load_checked(h5, path: Path) -> Structures:
    nodes = {f.name: _checked_dataset(h5, f, path) for f in SCHEMA}
    z_found, offsets_found = nodes["atomic_numbers"], nodes["offsets"]
    _check_shape(SCHEMA_FIELDS["atomic_numbers"], z_found.shape, {}, path)  # one dimension: it defines atoms
    _check_shape(SCHEMA_FIELDS["offsets"], offsets_found.shape, {}, path)  # ... and this one structures
    atoms, structures = z_found.shape[0], offsets_found.shape[0] - 1
    if structures < 1:
        entries = f"{offsets_found.shape[0]} entr{'y' if offsets_found.shape[0] == 1 else 'ies'}"
        raise UserInputError(f"{path}: 'offsets' has {entries}: the file holds no structures (it needs one entry "
                             "more than there are structures)")
    sizes = {"atoms": atoms, "structures": structures, "structures + 1": structures + 1}
    for f in SCHEMA:  # every shape first, from the metadata: nothing is read from a file that cannot fit
        if nodes[f.name] is not None:
            _check_shape(f, nodes[f.name].shape, sizes, path)
    offsets_field = SCHEMA_FIELDS["offsets"]
    offsets = _converted(_read(offsets_found.node, offsets_field, path), offsets_field, path, None)
    _check_offsets(offsets, atoms, path)
    values: dict[str, np.ndarray | None] = {}
    for f in SCHEMA:
        found = nodes[f.name]
        if f.name == "offsets" or found is None:
            values[f.name] = offsets if f.name == "offsets" else None
            continue
        atom_wise = f.shape[0] == "atoms"
        values[f.name] = _converted(_read(found.node, f, path), f, path, offsets if atom_wise else None)
    z = values["atomic_numbers"]
    out_of_range = (z < 1) | (z > 118)
    if out_of_range.any():
        row = int(np.flatnonzero(out_of_range)[0])
        raise UserInputError(f"{path}: 'atomic_numbers' holds {z[row]} at "
                             f"{_where(row, SCHEMA_FIELDS['atomic_numbers'], offsets)}; atomic numbers "
                             "are 1 to 118")
    for name in SPLITS:
        idx = values[f"split/{name}"]
        if idx is not None and len(idx) and ((idx < 0) | (idx >= structures)).any():
            bad = idx[(idx < 0) | (idx >= structures)][0]
            raise UserInputError(f"{path}: 'split/{name}' holds structure index {bad}, outside 0 to "
                                 f"{structures - 1} (the file has {structures} structures)")
    cut = lambda a: [a[offsets[k] : offsets[k + 1]] for k in range(structures)]  # noqa: E731
    return Structures(
        numbers=cut(z),
        positions=cut(values["positions"]),
        energies=values["energies"],
        forces=None if values["forces"] is None else cut(values["forces"]),
        cells=values["cells"],
        pbc=values["pbc"],
        group=values["group"],
        splits={name: values[f"split/{name}"] for name in SPLITS if values[f"split/{name}"] is not None},
        attrs=_attrs(h5, path),
    )


def read_h5(path: Path) -> Structures:
    """Read a dataset written by `write_h5`, checked against `SCHEMA` first (dtype kinds, shapes, offsets,
    finite values, atomic numbers, split indices): a one-line UserInputError naming the file and the dataset
    for a missing, corrupt, truncated or foreign file, or one that breaks the schema."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"dataset {path} does not exist")
    try:
        h5 = h5py.File(path, "r")
    except _H5_FAILURES as exc:
        raise UserInputError(f"dataset {path} is corrupt or not HDF5 ({_h5_reason(exc)})") from None
    try:
        return _load_checked(h5, path)
    finally:
        try:
            h5.close()
        except _H5_FAILURES:  # closing a damaged file can fail too; the data (or its error) is what matters
            pass


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
