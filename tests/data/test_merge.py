"""`data merge`: structures concatenated in order, groups kept apart, every split kept, mismatches refused."""

from __future__ import annotations

import numpy as np
import pytest
from deploycc.data.merge import merge_datasets
from deploycc.data.schema import Structures, read_h5, write_h5
from deploycc.errors import UserInputError


def _dataset(count: int, seed: int, periodic: bool = False, teacher: str = "emt") -> Structures:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 6, count)
    data = Structures(numbers=[rng.integers(1, 9, n) for n in sizes],
                      positions=[rng.normal(0, 2, (n, 3)) for n in sizes],
                      energies=rng.normal(size=count), forces=[rng.normal(size=(n, 3)) for n in sizes],
                      cells=np.tile(8.0 * np.eye(3), (count, 1, 1)) if periodic else None,
                      pbc=np.ones((count, 3), dtype=bool) if periodic else None,
                      group=np.arange(count) // 2 + 5, attrs={"teacher": teacher})
    order = rng.permutation(count)
    data.splits = {"train": np.sort(order[: count - 4]), "val": np.sort(order[count - 4: count - 2]),
                   "test": np.sort(order[count - 2:])}
    return data


def test_merge_keeps_every_structure_its_split_and_separate_groups():
    first, second = _dataset(10, 0), _dataset(8, 1, periodic=True)
    merged = merge_datasets([first, second], ["a.h5", "b.h5"])
    assert len(merged) == 18 and merged.attrs["sources"] == "a.h5, b.h5" and merged.attrs["teacher"] == "emt"
    np.testing.assert_array_equal(merged.group[:10], first.group)  # the first part's groups are kept as they were
    assert set(merged.group[:10]).isdisjoint(merged.group[10:])
    assert len(set(merged.group[10:])) == len(set(second.group))
    for name in ("train", "val", "test"):
        picked = merged.split(name)
        expected = [first.positions[i] for i in first.splits[name]] + [second.positions[i] for i in second.splits[name]]
        assert len(picked) == len(expected)
        assert all(np.array_equal(a, b) for a, b in zip(picked.positions, expected))
        assert np.array_equal(picked.energies, np.concatenate([first.energies[first.splits[name]],
                                                               second.energies[second.splits[name]]]))
    assert not merged.pbc[:10].any() and merged.pbc[10:].all()
    np.testing.assert_array_equal(merged.cells[10:], second.cells)


def test_merge_refuses_other_teachers_mixed_labels_and_a_single_input():
    with pytest.raises(UserInputError, match="labelled by 'xtb'"):
        merge_datasets([_dataset(6, 0), _dataset(6, 1, teacher="xtb")], ["a.h5", "b.h5"])
    unlabelled = _dataset(6, 1)
    unlabelled.energies, unlabelled.forces = None, None
    with pytest.raises(UserInputError, match="labels"):
        merge_datasets([_dataset(6, 0), unlabelled], ["a.h5", "b.h5"])
    with pytest.raises(UserInputError, match="at least two"):
        merge_datasets([_dataset(6, 0)], ["a.h5"])


def test_data_merge_cli_writes_a_readable_file_and_never_overwrites_an_input(tmp_path, cli):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    write_h5(_dataset(10, 0), a)
    write_h5(_dataset(8, 1), b)
    code, out, err = cli("data", "merge", a, b, "--out", tmp_path / "ab.h5")
    assert code == 0 and "wrote 18 structures of 2 datasets" in out, err
    merged = read_h5(tmp_path / "ab.h5")
    assert len(merged) == 18 and len(merged.splits["test"]) == 4
    before = a.read_bytes()
    code, _, err = cli("data", "merge", a, b, "--out", a)
    assert code == 65 and "is an input of this command" in err and len(err.strip().splitlines()) == 1
    assert a.read_bytes() == before
