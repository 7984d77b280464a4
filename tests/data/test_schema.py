"""The HDF5 dataset schema: round trip, atomic and validated writes, clear read errors, group splits and
reading ASE files."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from deploycc.data.schema import (
    SCHEMA_VERSION,
    SPLITS,
    Structures,
    read_h5,
    read_structures,
    split_by_group,
    write_h5,
)
from deploycc.errors import DeployccError, UserInputError

SIZES = (3, 5, 9, 1)


def make_structures(seed: int = 0, labelled: bool = True) -> Structures:
    rng = np.random.default_rng(seed)
    numbers = [rng.choice([1, 6, 7, 8, 16], size=n).astype(np.int64) for n in SIZES]
    positions = [rng.uniform(-3.0, 3.0, size=(n, 3)) for n in SIZES]
    cells = rng.uniform(0.0, 10.0, size=(len(SIZES), 3, 3))
    pbc = rng.random((len(SIZES), 3)) > 0.5
    data = Structures(
        numbers=numbers,
        positions=positions,
        cells=cells,
        pbc=pbc,
        group=np.array([4, 4, 7, 9]),
        splits={"train": np.array([0, 1]), "val": np.array([2]), "test": np.array([3])},
        attrs={"teacher": "gfn2-xtb", "source": "unit test", "n_conformers": 3, "temperature": 300.5,
               "tags": ["a", "b"]},
    )
    if labelled:
        data.energies = rng.normal(size=len(SIZES)) * 10
        data.forces = [rng.normal(size=(n, 3)) for n in SIZES]
    return data


def listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


def file_state(path):
    stat = os.stat(path)
    return path.read_bytes(), stat.st_mtime_ns


# --- round trip --------------------------------------------------------------------------------------------


def test_round_trip_labelled(tmp_path):
    data = make_structures(1)
    path = tmp_path / "set.h5"
    write_h5(data, path)
    assert listing(tmp_path) == ["set.h5"]  # no temporary file left
    back = read_h5(path)
    assert len(back) == len(data)
    for k in range(len(data)):
        assert back.numbers[k].dtype == np.int64
        np.testing.assert_array_equal(back.numbers[k], data.numbers[k])
        np.testing.assert_array_equal(back.positions[k], data.positions[k])  # float64: exact
        np.testing.assert_array_equal(back.forces[k], data.forces[k])
    np.testing.assert_array_equal(back.energies, data.energies)
    np.testing.assert_array_equal(back.cells, data.cells)
    np.testing.assert_array_equal(back.pbc, data.pbc)
    np.testing.assert_array_equal(back.group, data.group)
    assert sorted(back.splits) == sorted(data.splits)
    for name in data.splits:
        np.testing.assert_array_equal(back.splits[name], data.splits[name])
    assert back.has_labels
    # user attributes: scalars keep their type, others are stored as text; schema attributes are added
    assert back.attrs["teacher"] == "gfn2-xtb"
    assert back.attrs["source"] == "unit test"
    assert back.attrs["n_conformers"] == 3
    assert back.attrs["temperature"] == 300.5
    assert back.attrs["tags"] == str(["a", "b"])
    assert back.attrs["format_version"] == SCHEMA_VERSION
    assert back.attrs["energy_unit"] == "eV"
    assert back.attrs["length_unit"] == "Angstrom"
    assert back.attrs["force_unit"] == "eV/Angstrom"


def test_round_trip_unlabelled_defaults(tmp_path):
    data = make_structures(2, labelled=False)
    data.cells = data.pbc = data.group = None
    data.splits = {}
    path = tmp_path / "plain.h5"
    write_h5(data, path)
    back = read_h5(path)
    assert back.energies is None and back.forces is None and not back.has_labels
    assert back.splits == {}
    np.testing.assert_array_equal(back.group, np.arange(len(SIZES)))
    assert back.cells.shape == (len(SIZES), 3, 3) and not back.cells.any()
    assert back.pbc.shape == (len(SIZES), 3) and not back.pbc.any()
    for k in range(len(data)):
        np.testing.assert_array_equal(back.positions[k], data.positions[k])


def test_overwrite_replaces_and_split_selects(tmp_path):
    path = tmp_path / "set.h5"
    write_h5(make_structures(3), path)
    data = make_structures(4)
    write_h5(data, path)
    assert listing(tmp_path) == ["set.h5"]
    back = read_h5(path)
    np.testing.assert_array_equal(back.energies, data.energies)
    val = back.split("val")
    assert len(val) == 1
    np.testing.assert_array_equal(val.positions[0], data.positions[2])
    np.testing.assert_array_equal(val.forces[0], data.forces[2])
    with pytest.raises(UserInputError):
        read_h5(path).subset([0]).split("train")  # subsets carry no splits


def test_write_creates_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "set.h5"
    write_h5(make_structures(5), path)
    assert len(read_h5(path)) == len(SIZES)
    assert listing(path.parent) == ["set.h5"]


# --- validation and atomicity --------------------------------------------------------------------------------


def _break(kind: str) -> Structures:
    data = make_structures(6)
    if kind == "nan_position":
        data.positions[1][2, 0] = np.nan
    elif kind == "inf_position":
        data.positions[0][0, 2] = np.inf
    elif kind == "z_zero":
        data.numbers[2][4] = 0
    elif kind == "z_negative":
        data.numbers[0][0] = -1
    elif kind == "z_too_large":
        data.numbers[1][0] = 119
    elif kind == "empty_structure":
        data.numbers[3] = np.zeros(0, dtype=np.int64)
        data.positions[3] = np.zeros((0, 3))
        data.forces[3] = np.zeros((0, 3))
    elif kind == "nan_force":
        data.forces[2][1, 1] = np.nan
    elif kind == "nan_energy":
        data.energies[1] = np.nan
    else:
        raise AssertionError(kind)
    return data


INVALID = ["nan_position", "inf_position", "z_zero", "z_negative", "z_too_large", "empty_structure",
           "nan_force", "nan_energy"]


@pytest.mark.parametrize("kind", INVALID)
def test_invalid_structures_refused_and_existing_file_untouched(tmp_path, kind):
    path = tmp_path / "set.h5"
    write_h5(make_structures(7), path)
    before = file_state(path)
    with pytest.raises(UserInputError) as info:
        write_h5(_break(kind), path)
    assert isinstance(info.value, DeployccError)
    assert "\n" not in str(info.value)
    assert file_state(path) == before
    assert listing(tmp_path) == ["set.h5"]
    assert len(read_h5(path)) == len(SIZES)


@pytest.mark.parametrize("kind", ["nan_position", "empty_structure"])
def test_invalid_structures_create_no_file(tmp_path, kind):
    with pytest.raises(UserInputError):
        write_h5(_break(kind), tmp_path / "new.h5")
    assert listing(tmp_path) == []


def _inconsistent(kind: str) -> Structures:
    data = make_structures(8)
    if kind == "positions_rows":
        data.positions[0] = np.vstack([data.positions[0], [[9.0, 9.0, 9.0]]])  # 4 rows for 3 atoms
    elif kind == "forces_rows":
        data.forces[1] = data.forces[1][:-1]  # 4 force rows for 5 atoms
    elif kind == "energies_count":
        data.energies = np.append(data.energies, 1.0)  # 5 energies for 4 structures
    return data


@pytest.mark.parametrize("kind", ["positions_rows", "forces_rows", "energies_count"])
def test_inconsistent_lengths_are_refused(tmp_path, kind):
    path = tmp_path / "set.h5"
    with pytest.raises(UserInputError):
        write_h5(_inconsistent(kind), path)
    assert not path.exists()


def test_zero_structures_refused_with_user_error(tmp_path):
    with pytest.raises(UserInputError):
        write_h5(Structures(numbers=[], positions=[]), tmp_path / "none.h5")
    assert listing(tmp_path) == []


# --- read errors -----------------------------------------------------------------------------------------------


def test_read_missing_file(tmp_path):
    path = tmp_path / "missing.h5"
    with pytest.raises(UserInputError) as info:
        read_h5(path)
    assert str(path) in str(info.value)
    with pytest.raises(UserInputError):
        read_structures(path)


@pytest.mark.parametrize("content", [b"not an hdf5 file\n", b"", bytes(range(256)) * 8])
def test_read_non_hdf5_file(tmp_path, content):
    path = tmp_path / "fake.h5"
    path.write_bytes(content)
    with pytest.raises(UserInputError) as info:
        read_h5(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserInputError):
        read_structures(path)  # .h5 suffix: dispatched to read_h5


def test_read_truncated_hdf5(tmp_path):
    good = tmp_path / "good.h5"
    write_h5(make_structures(9), good)
    data = good.read_bytes()
    path = tmp_path / "cut.h5"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserInputError) as info:
        read_h5(path)
    assert str(path) in str(info.value)


def test_read_hdf5_without_schema_keys(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("coordinates", data=np.zeros((4, 3)))
    with pytest.raises(UserInputError) as info:
        read_h5(path)
    assert str(path) in str(info.value)
    partial = tmp_path / "partial.h5"
    with h5py.File(partial, "w") as h5:
        h5.create_dataset("atomic_numbers", data=np.array([1, 1]))
        h5.create_dataset("positions", data=np.zeros((2, 3)))
    with pytest.raises(UserInputError) as info:
        read_h5(partial)
    assert "offsets" in str(info.value)


# --- splits ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (0.34, 0.33, 0.33)])
def test_split_by_group_never_cuts_a_group(seed, fractions):
    rng = np.random.default_rng(100 + seed)
    group = rng.integers(0, 17, size=80)
    splits = split_by_group(group, fractions, seed)
    assert sorted(splits) == sorted(SPLITS)
    everything = np.concatenate([splits[name] for name in SPLITS])
    assert sorted(everything.tolist()) == list(range(len(group)))  # each structure exactly once
    owner = {}
    for name in SPLITS:
        for g in np.unique(group[splits[name]]):
            assert owner.setdefault(int(g), name) == name, f"group {g} in {owner[int(g)]} and {name}"
    assert all(len(splits[name]) > 0 for name in SPLITS)  # >= 3 groups: every split non-empty
    again = split_by_group(group, fractions, seed)
    for name in SPLITS:
        np.testing.assert_array_equal(again[name], splits[name])  # deterministic per seed


def test_split_by_group_depends_on_seed_and_fractions():
    group = np.repeat(np.arange(40), 3)
    a = split_by_group(group, (0.8, 0.1, 0.1), 0)
    b = split_by_group(group, (0.8, 0.1, 0.1), 1)
    assert any(not np.array_equal(a[n], b[n]) for n in SPLITS)
    n_groups = {name: len(np.unique(group[a[name]])) for name in SPLITS}
    assert n_groups == {"train": 32, "val": 4, "test": 4}


def test_split_by_group_few_groups_all_train():
    group = np.array([5, 5, 9, 9, 9])
    splits = split_by_group(group, (0.8, 0.1, 0.1), 0)
    np.testing.assert_array_equal(splits["train"], np.arange(5))
    assert len(splits["val"]) == 0 and len(splits["test"]) == 0


# --- ASE files ----------------------------------------------------------------------------------------------------


def _ase_atoms(seed: int):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    out = []
    for n in (3, 6, 2):
        atoms = Atoms(numbers=rng.choice([1, 6, 8], size=n), positions=rng.uniform(-2, 2, size=(n, 3)))
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal() * 5), forces=rng.normal(size=(n, 3)))
        out.append(atoms)
    return out


def test_read_extxyz_keeps_labels(tmp_path):
    import ase.io

    atoms_list = _ase_atoms(10)
    path = tmp_path / "frames.extxyz"
    ase.io.write(str(path), atoms_list, format="extxyz")
    data = read_structures(path)
    assert len(data) == len(atoms_list)
    assert data.has_labels
    for k, atoms in enumerate(atoms_list):
        np.testing.assert_array_equal(data.numbers[k], atoms.get_atomic_numbers())
        np.testing.assert_allclose(data.positions[k], atoms.get_positions(), atol=1e-6)
        np.testing.assert_allclose(data.forces[k], atoms.get_forces(), atol=1e-6)
        assert data.energies[k] == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
    # and it can be written to the schema and read back with the labels intact
    h5 = tmp_path / "frames.h5"
    write_h5(data, h5)
    back = read_structures(h5)
    np.testing.assert_array_equal(back.energies, data.energies)
    for k in range(len(data)):
        np.testing.assert_array_equal(back.forces[k], data.forces[k])


def test_read_xyz_without_labels(tmp_path):
    import ase.io
    from ase import Atoms

    path = tmp_path / "plain.xyz"
    ase.io.write(str(path), [Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])], format="extxyz")
    data = read_structures(path)
    assert len(data) == 1 and not data.has_labels
    np.testing.assert_array_equal(data.numbers[0], [1, 1, 8])


def test_to_atoms_round_trip_through_extxyz(tmp_path):
    import ase.io

    data = make_structures(11)
    data.cells = None
    data.pbc = None
    path = tmp_path / "out.extxyz"
    ase.io.write(str(path), data.to_atoms(), format="extxyz")
    back = read_structures(path)
    np.testing.assert_allclose(back.energies, data.energies, atol=1e-6)
    for k in range(len(data)):
        np.testing.assert_array_equal(back.numbers[k], data.numbers[k])
        np.testing.assert_allclose(back.positions[k], data.positions[k], atol=1e-6)
        np.testing.assert_allclose(back.forces[k], data.forces[k], atol=1e-6)


def test_unreadable_structure_file(tmp_path):
    path = tmp_path / "junk.xyz"
    path.write_text("this is not\nan xyz file\n")
    with pytest.raises(UserInputError) as info:
        read_structures(path)
    assert str(path) in str(info.value)


# --- periodic structures -------------------------------------------------------------------------------------------


def test_periodic_atoms_keep_cells_pbc_and_labels_through_hdf5_and_extxyz(tmp_path):
    import ase.io
    from ase.build import bulk, fcc111
    from ase.calculators.singlepoint import SinglePointCalculator

    from deploycc.data.schema import from_atoms

    rng = np.random.default_rng(12)
    slab = fcc111("Al", size=(2, 2, 2), vacuum=4.0)
    slab.pbc = (True, True, False)
    cells = [bulk("Cu", "fcc", a=3.61, cubic=True), bulk("Au", "fcc", a=4.08), slab]
    for atoms in cells:
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()), forces=rng.normal(size=(len(atoms), 3)))
    data = from_atoms(cells, group=np.array([0, 1, 1]), require_labels=True)
    assert data.has_labels and data.pbc.tolist() == [[True] * 3, [True] * 3, [True, True, False]]
    np.testing.assert_array_equal(data.cells[1], cells[1].cell.array)  # a primitive (non-orthogonal) cell
    path = tmp_path / "cells.h5"
    write_h5(data, path)
    back = read_h5(path)
    np.testing.assert_array_equal(back.cells, data.cells)
    np.testing.assert_array_equal(back.pbc, data.pbc)
    np.testing.assert_array_equal(back.group, [0, 1, 1])
    for k, atoms in enumerate(back.to_atoms()):
        assert atoms.pbc.tolist() == cells[k].pbc.tolist()
        np.testing.assert_array_equal(atoms.cell.array, cells[k].cell.array)
        np.testing.assert_array_equal(atoms.get_forces(), cells[k].get_forces())
    xyz = tmp_path / "cells.extxyz"
    ase.io.write(str(xyz), cells, format="extxyz")
    again = read_structures(xyz)
    np.testing.assert_array_equal(again.pbc, data.pbc)
    np.testing.assert_allclose(again.cells, data.cells, atol=1e-8)
    np.testing.assert_allclose(again.energies, data.energies, atol=1e-8)


def test_from_atoms_without_labels_and_requiring_them():
    from ase import Atoms

    from deploycc.data.schema import from_atoms

    plain = [Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])]
    data = from_atoms(plain)
    assert not data.has_labels and data.energies is None and data.forces is None
    assert not data.pbc.any() and data.cells.shape == (1, 3, 3)
    with pytest.raises(UserInputError, match="no energy/forces labels"):
        from_atoms(plain, require_labels=True)


# --- the schema on read: every dataset checked against SCHEMA, one line naming the file and the dataset ---------


def raw_h5(path, **datasets):
    """An HDF5 file holding exactly these datasets (None: a group instead; 'split/x' nests)."""
    with h5py.File(path, "w") as h5:
        for key, value in datasets.items():
            if value is None:
                h5.create_group(key)
            else:
                h5.create_dataset(key, data=value)
        h5.attrs["format_version"] = SCHEMA_VERSION
    return path


def valid_datasets() -> dict:
    """The datasets write_h5 writes for make_structures(12): 4 structures of 3, 5, 9, 1 atoms (18 atoms)."""
    data = make_structures(12)
    offsets = np.concatenate([[0], np.cumsum(SIZES)]).astype(np.int64)
    return {"atomic_numbers": np.concatenate(data.numbers), "positions": np.concatenate(data.positions),
            "offsets": offsets, "energies": data.energies, "forces": np.concatenate(data.forces),
            "cells": data.cells, "pbc": data.pbc, "group": data.group,
            **{f"split/{name}": idx for name, idx in data.splits.items()}}


def _with(**changes):
    def edit(d):
        for key, value in changes.items():
            if value is ...:
                d.pop(key)
            else:
                d[key] = value(d) if callable(value) else value
    return edit


def _set(key, index, value, dtype=None):
    def change(d):
        a = d[key].astype(dtype) if dtype is not None else d[key].copy()
        a[index] = value
        return a
    return change


def _split_dataset(d):
    for name in SPLITS:
        d.pop(f"split/{name}")
    d["split"] = np.arange(4)


# case: (edit of the valid datasets, the field named, the message after "<path>: ")
BAD_H5 = {
    "positions_two_columns": (_with(positions=lambda d: d["positions"][:, :2]), "positions",
                              "'positions' must have shape (atoms, 3), got (18, 2) (the file has 18 atoms)"),
    "positions_missing": (_with(positions=...), "positions",
                          "not a deploycc HDF5 file: no 'positions' dataset (it needs atomic_numbers, positions, "
                          "offsets)"),
    "positions_nan": (_with(positions=_set("positions", (4, 1), np.nan)), "positions",
                      "'positions' is NaN or infinite at structure 1 (atom 1)"),
    "numbers_strings": (_with(atomic_numbers=lambda d: np.array([b"H"] * 18)), "atomic_numbers",
                        "'atomic_numbers' must hold integers (int64), got strings (|S1)"),
    "numbers_fractional": (_with(atomic_numbers=_set("atomic_numbers", 5, 6.5, np.float64)), "atomic_numbers",
                           "'atomic_numbers' must hold whole numbers (int64), got 6.5 at structure 1 (atom 2)"),
    "numbers_zero": (_with(atomic_numbers=_set("atomic_numbers", 9, 0)), "atomic_numbers",
                     "'atomic_numbers' holds 0 at structure 2 (atom 1); atomic numbers are 1 to 118"),
    "numbers_two_dimensional": (_with(atomic_numbers=lambda d: d["atomic_numbers"].reshape(9, 2)), "atomic_numbers",
                                "'atomic_numbers' must have shape (atoms,), got (9, 2)"),
    "offsets_group": (_with(offsets=None), "offsets", "'offsets' must be a dataset, got a group"),
    "offsets_scalar": (_with(offsets=np.int64(4)), "offsets",
                       "'offsets' must have shape (structures + 1,), got () (a scalar)"),
    "offsets_not_from_zero": (_with(offsets=_set("offsets", 0, 1)), "offsets", "'offsets' must start at 0, got 1"),
    "offsets_decreasing": (_with(offsets=np.array([0, 8, 3, 17, 18])), "offsets",
                           "'offsets' must never decrease, got 8 then 3 (entries 1 and 2)"),
    "offsets_past_the_end": (_with(offsets=_set("offsets", -1, 25)), "offsets",
                             "'offsets' ends at 25, past the end of the 18 atoms of 'atomic_numbers' and "
                             "'positions'"),
    "offsets_short_of_the_end": (_with(offsets=_set("offsets", -1, 17)), "offsets",
                                 "'offsets' ends at 17, short of the 18 atoms of 'atomic_numbers' and 'positions'"),
    "offsets_fractional": (_with(offsets=_set("offsets", 2, 8.5, np.float64)), "offsets",
                           "'offsets' must hold whole numbers (int64), got 8.5 at entry 2"),
    "no_structures": (_with(offsets=np.array([0])), "offsets",
                      "'offsets' has 1 entry: the file holds no structures"),
    "energies_short": (_with(energies=lambda d: d["energies"][:-1]), "energies",
                       "'energies' must have shape (structures,), got (3,) (the file has 4 structures)"),
    "energies_strings": (_with(energies=lambda d: np.array([b"1.0"] * 4)), "energies",
                         "'energies' must hold numbers (float64), got strings (|S3)"),
    "energies_nan": (_with(energies=_set("energies", 2, np.nan)), "energies",
                     "'energies' is NaN or infinite at structure 2"),
    "energies_inf": (_with(energies=_set("energies", 3, -np.inf)), "energies",
                     "'energies' is NaN or infinite at structure 3"),
    "forces_rows": (_with(forces=lambda d: d["forces"][:-2]), "forces",
                    "'forces' must have shape (atoms, 3), got (16, 3) (the file has 18 atoms)"),
    "forces_nan": (_with(forces=_set("forces", (6, 2), np.nan)), "forces",
                   "'forces' is NaN or infinite at structure 1 (atom 3)"),
    "forces_inf": (_with(forces=_set("forces", (17, 0), np.inf)), "forces",
                   "'forces' is NaN or infinite at structure 3 (atom 0)"),
    "cells_shape": (_with(cells=lambda d: d["cells"][:, :2]), "cells",
                    "'cells' must have shape (structures, 3, 3), got (4, 2, 3) (the file has 4 structures)"),
    "cells_nan": (_with(cells=_set("cells", (1, 0, 0), np.nan)), "cells", "'cells' is NaN or infinite at structure 1"),
    "pbc_length": (_with(pbc=lambda d: d["pbc"][:3]), "pbc",
                   "'pbc' must have shape (structures, 3), got (3, 3) (the file has 4 structures)"),
    "pbc_values": (_with(pbc=_set("pbc", (2, 1), 2, np.int64)), "pbc",
                   "'pbc' must hold booleans (or 0/1), got 2 at structure 2"),
    "pbc_floats": (_with(pbc=lambda d: d["pbc"].astype(np.float32)), "pbc",
                   "'pbc' must hold booleans (bool), got floats (float32)"),
    "group_length": (_with(group=np.arange(6)), "group",
                     "'group' must have shape (structures,), got (6,) (the file has 4 structures)"),
    "split_out_of_range": (_with(**{"split/val": np.array([9])}), "split/val",
                           "'split/val' holds structure index 9, outside 0 to 3 (the file has 4 structures)"),
    "split_negative": (_with(**{"split/train": np.array([0, -1])}), "split/train",
                       "'split/train' holds structure index -1, outside 0 to 3"),
    "split_two_dimensional": (_with(**{"split/test": np.zeros((1, 1), dtype=np.int64)}), "split/test",
                              "'split/test' must have shape (n,), got (1, 1)"),
    "split_a_dataset": (_split_dataset, "split", "'split' must be a group holding 'split/train', got a dataset"),
}


def bad_h5(tmp_path, case: str):
    edit, field_name, message = BAD_H5[case]
    datasets = valid_datasets()
    edit(datasets)
    return raw_h5(tmp_path / f"{case}.h5", **datasets), field_name, message


def test_the_valid_raw_file_reads_like_write_h5s(tmp_path):
    """The control for BAD_H5: the unedited datasets read back exactly as write_h5's file does."""
    raw = read_h5(raw_h5(tmp_path / "raw.h5", **valid_datasets()))
    write_h5(make_structures(12), tmp_path / "written.h5")
    written = read_h5(tmp_path / "written.h5")
    assert len(raw) == len(written) == len(SIZES)
    for k in range(len(raw)):
        for name in ("numbers", "positions", "forces"):
            np.testing.assert_array_equal(getattr(raw, name)[k], getattr(written, name)[k])
            assert getattr(raw, name)[k].dtype == getattr(written, name)[k].dtype
    for name in ("energies", "cells", "pbc", "group"):
        np.testing.assert_array_equal(getattr(raw, name), getattr(written, name))
        assert getattr(raw, name).dtype == getattr(written, name).dtype
    assert sorted(raw.splits) == sorted(written.splits)


@pytest.mark.parametrize("case", sorted(BAD_H5))
def test_read_h5_checks_the_schema(tmp_path, case):
    path, field_name, message = bad_h5(tmp_path, case)
    with pytest.raises(UserInputError) as info:
        read_h5(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: {message}"), text
    assert f"'{field_name}'" in text


def test_whole_floats_and_small_integer_types_are_read_in_the_schema_dtypes(tmp_path):
    datasets = valid_datasets()
    datasets["atomic_numbers"] = datasets["atomic_numbers"].astype(np.float32)  # 1.0, 6.0, ...: whole numbers
    datasets["offsets"] = datasets["offsets"].astype(np.uint8)
    datasets["positions"] = datasets["positions"].astype(np.float32)
    datasets["pbc"] = datasets["pbc"].astype(np.int8)  # 0/1
    data = read_h5(raw_h5(tmp_path / "types.h5", **datasets))
    expected = valid_datasets()
    assert data.numbers[2].dtype == np.int64 and data.positions[2].dtype == np.float64 and data.pbc.dtype == bool
    np.testing.assert_array_equal(np.concatenate(data.numbers), expected["atomic_numbers"])
    np.testing.assert_array_equal(data.pbc, expected["pbc"])


def test_an_empty_structure_is_read_and_refused_later_by_file_and_index(tmp_path):
    datasets = valid_datasets()
    datasets["offsets"] = np.array([0, 3, 3, 17, 18])  # structure 1 has no atoms: the schema allows it
    data = read_h5(raw_h5(tmp_path / "empty.h5", **datasets))
    assert [len(z) for z in data.numbers] == [3, 0, 14, 1]


def test_the_docstring_layout_is_rendered_from_the_declared_schema():
    import deploycc.data.schema as schema

    for field_ in schema.SCHEMA:
        assert f"/{field_.name}" in schema.__doc__ and f"`/{field_.name}`" in schema.schema_table(markdown=True)
        assert field_.rule in schema.__doc__
    assert "{layout}" not in schema.__doc__
    required = [f.name for f in schema.SCHEMA if f.required]
    assert required == ["atomic_numbers", "positions", "offsets"]


# --- the same through the real command line, in this process --------------------------------------------------


def one_error_line(result, *fragments, code: int = 65) -> str:
    exit_code, out, err = result
    assert exit_code == code, (exit_code, out[-2000:], err[-2000:])
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.parametrize("case", sorted(BAD_H5))
def test_data_import_of_a_bad_h5_is_one_line_exit_65(cli, tmp_path, case):
    path, field_name, message = bad_h5(tmp_path, case)
    out = tmp_path / "out.h5"
    line = one_error_line(cli("data", "import", path, "--out", out), str(path), f"'{field_name}'")
    assert line.startswith(f"error: {path}: {message}")
    assert not out.exists()


@pytest.mark.parametrize("content", ["text", "empty", "truncated"])
def test_a_file_that_is_not_hdf5_or_truncated_is_one_line_exit_65(cli, tmp_path, content):
    path = tmp_path / "d.h5"
    if content == "text":
        path.write_text("not an hdf5 file\n")
    elif content == "empty":
        path.write_bytes(b"")
    else:
        good = tmp_path / "good.h5"
        write_h5(make_structures(13), good)
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    one_error_line(cli("data", "import", path, "--out", tmp_path / "out.h5"), str(path))
    assert not (tmp_path / "out.h5").exists()


def _h2o_like(n_structures: int, seed: int = 0, sizes=(3, 4, 5, 6)):
    """Small molecules with sane geometry (atoms >= 1 Å apart) and labels."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_structures):
        n = sizes[k % len(sizes)]
        positions = np.array([[1.2 * i, 0.3 * (i % 2), 0.0] for i in range(n)]) + rng.normal(0, 0.02, (n, 3))
        atoms = Atoms(numbers=rng.choice([1, 6, 8], size=n), positions=positions)
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()), forces=rng.normal(size=(n, 3)))
        out.append(atoms)
    return out


def _datasets_of(atoms_list) -> dict:
    from deploycc.data.schema import from_atoms

    data = from_atoms(atoms_list, require_labels=True)
    return {"atomic_numbers": np.concatenate(data.numbers), "positions": np.concatenate(data.positions),
            "offsets": np.concatenate([[0], np.cumsum([len(z) for z in data.numbers])]).astype(np.int64),
            "energies": data.energies, "forces": np.concatenate(data.forces), "cells": data.cells, "pbc": data.pbc}


@pytest.mark.parametrize("case", ["positions_two_columns", "offsets_past_the_end", "numbers_fractional"])
def test_predict_refuses_a_bad_h5_before_any_output(cli, tmp_path, case):
    path, field_name, message = bad_h5(tmp_path, case)
    out = tmp_path / "o.extxyz"
    line = one_error_line(cli("predict", "ultra-tiny", "--structures", path, "--out", out), str(path),
                          f"'{field_name}'")
    assert line == f"error: {path}: {message}"
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".h5", ".extxyz"])
def test_predict_names_the_file_of_a_structure_with_no_atoms(cli, tmp_path, suffix):
    import ase.io
    from ase import Atoms

    atoms_list = _h2o_like(3)
    path = tmp_path / f"in{suffix}"
    if suffix == ".h5":
        datasets = _datasets_of(atoms_list)
        datasets["offsets"] = np.array([0, 3, 3, 12])  # structure 1's atoms join structure 2
        raw_h5(path, **datasets)
    else:
        ase.io.write(path, [atoms_list[0], Atoms(), atoms_list[2]], format="extxyz")
    out = tmp_path / "o.extxyz"
    line = one_error_line(cli("predict", "ultra-tiny", "--structures", path, "--out", out))
    assert line == f"error: {path}: structure 1 has no atoms"
    assert not out.exists()


@pytest.fixture(scope="module")
def eager_artifact(tiny_checkpoint, calib_file, tmp_path_factory):
    from deploycc.build import build

    return build(str(tiny_checkpoint), "eager", tmp_path_factory.mktemp("art"), calib=calib_file).folder


def test_verify_refuses_energies_shorter_than_the_structures(cli, eager_artifact, tmp_path):
    datasets = _datasets_of(_h2o_like(6))
    datasets["energies"] = datasets["energies"][:-1]
    path = raw_h5(tmp_path / "short.h5", **datasets)
    line = one_error_line(cli("verify", eager_artifact, "--data", path), str(path), "'energies'")
    assert line == (f"error: {path}: 'energies' must have shape (structures,), got (5,) (the file has 6 "
                    "structures)")


def test_verify_refuses_nan_reference_forces_naming_the_file_before_parity(cli, eager_artifact, tmp_path,
                                                                          monkeypatch):
    import ase.io

    import deploycc.verify as verify_module

    def no_parity(*args, **kwargs):
        raise AssertionError("parity ran before the labels were checked")

    monkeypatch.setattr(verify_module, "run_parity", no_parity)
    atoms_list = _h2o_like(6)
    datasets = _datasets_of(atoms_list)
    datasets["forces"][5, 1] = np.nan  # structure 1 (3 + 4 atoms ...): row 5 is its atom 2
    h5_path = raw_h5(tmp_path / "nanforces.h5", **datasets)
    line = one_error_line(cli("verify", eager_artifact, "--data", h5_path), str(h5_path), "'forces'")
    assert line == f"error: {h5_path}: 'forces' is NaN or infinite at structure 1 (atom 2)"
    atoms_list[3].calc.results["forces"][0, 0] = np.nan  # the same through an extxyz file (no schema of its own)
    xyz_path = tmp_path / "nanforces.extxyz"
    ase.io.write(xyz_path, atoms_list, format="extxyz")
    line = one_error_line(cli("verify", eager_artifact, "--data", xyz_path), str(xyz_path))
    assert line == f"error: {xyz_path}: structure 3 has NaN or infinite reference labels (forces)"


def test_verify_refuses_a_file_none_of_whose_structures_fits_the_profile(cli, eager_artifact, tmp_path):
    import json
    import shutil

    small = tmp_path / "small" / "eager"
    shutil.copytree(eager_artifact, small)
    manifest = json.loads((small / "manifest.json").read_text())
    manifest["settings"]["atoms"] = {"min": 1, "opt": 2, "max": 2}
    (small / "manifest.json").write_text(json.dumps(manifest))
    path = raw_h5(tmp_path / "big.h5", **_datasets_of(_h2o_like(5)))  # 3 to 6 atoms each
    line = one_error_line(cli("verify", small, "--data", path), str(path))
    assert line == f"error: {path}: none of the 5 structures fits the artifact's atoms profile (at most 2 atoms)"
