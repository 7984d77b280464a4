"""The checked HDF5 reader: a file is compared with the declared `SCHEMA` (deploycc/data/schema.py) from its
metadata before any structure is built; every failure is one line naming the file and the dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import UserInputError
from .schema import SCHEMA, SCHEMA_FIELDS, STORED_DTYPES, STORED_SPLITS, Field, Structures


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
        raise UserInputError(f"{path}: '{f.name}' must hold {want} ({STORED_DTYPES[f.kind]}), got {_kind_name(dtype)}")
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
    for name in STORED_SPLITS:
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
        splits={name: values[f"split/{name}"] for name in STORED_SPLITS if values[f"split/{name}"] is not None},
        attrs=_attrs(h5, path),
    )


def read_checked(path: Path) -> Structures:
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
