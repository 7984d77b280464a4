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
