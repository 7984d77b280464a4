"""Periodic water boxes: packed at 1 g/cm³ with no contact under the minimum image, labelled and split by box."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rdkit")

from deploycc.data import boxes  # noqa: E402
from deploycc.data.boxes import box_list, embed_box, generate_boxes  # noqa: E402
from deploycc.data.clusters import MIN_CONTACT, MIN_HEAVY_CONTACT  # noqa: E402
from deploycc.data.teachers import get_teacher  # noqa: E402


def _fragment_of(sizes):
    return np.repeat(np.arange(len(sizes)), sizes)


@pytest.mark.parametrize("smiles, sizes", [(".".join(["O"] * 24), [3] * 24),
                                           (".".join(["CCO"] + ["O"] * 20), [9] + [3] * 20)])
def test_a_box_is_a_periodic_cube_at_liquid_density_without_contacts(smiles, sizes):
    box = embed_box(smiles, seed=3)
    edge = box.cell[0, 0]
    assert box.pbc.all() and np.allclose(box.cell, np.eye(3) * edge)
    density = box.get_masses().sum() / box.get_volume() / 0.602214  # g/cm³
    assert 0.9 < density <= 1.0 + 1e-9
    fragment = _fragment_of(sizes)
    d = box.positions[:, None, :] - box.positions[None, :, :]
    r = np.linalg.norm(d - edge * np.round(d / edge), axis=-1)
    other = fragment[:, None] != fragment[None, :]
    heavy = (box.numbers[:, None] > 1) & (box.numbers[None, :] > 1)
    assert r[other].min() >= MIN_CONTACT and r[other & heavy].min() >= MIN_HEAVY_CONTACT
    first = box.positions[fragment == 0]
    assert np.allclose(first.mean(0), edge / 2)  # the solute sits at the centre


def test_the_box_list_holds_pure_water_and_each_solute():
    pairs = box_list(8)
    assert pairs[0] == (".".join(["O"] * 8), "water-box8")
    assert len(pairs) == 1 + len(boxes.SOLUTES) and all(s.count(".") == 8 for s, _ in pairs[1:])


def test_box_frames_are_labelled_periodic_and_split_by_box():
    data, report = generate_boxes(get_teacher("emt"), box_list(6)[:5], rattles=2, seed=1)
    assert len(data) == report.structures == 10 and report.molecules == 5
    assert data.pbc.all() and all(c[0, 0] > 5.0 for c in data.cells)
    assert np.isfinite(data.energies).all() and all(np.isfinite(f).all() for f in data.forces)
    groups = {name: set(data.group[idx].tolist()) for name, idx in data.splits.items()}
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])
    first, second = data.positions[0], data.positions[1]
    assert not np.allclose(first, second)  # two rattles of one box


@pytest.mark.parametrize("smiles", ["c1ccc(O)cc1.O", "c1ccccc1.O.O.O.O", "O"])
def test_no_fragment_touches_its_own_periodic_image(smiles):
    box = embed_box(smiles, seed=2)
    edge = box.cell[0, 0]
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1) if (i, j, k) != (0, 0, 0)])
    images = box.positions[None, :, :] + edge * shifts[:, None, :]
    closest = np.linalg.norm(box.positions[None, :, None, :] - images[:, None, :, :], axis=-1).min()
    assert closest >= MIN_CONTACT


def test_fewer_than_three_boxes_are_all_test_frames():
    data, _ = generate_boxes(get_teacher("emt"), box_list(6)[:2], rattles=2, seed=0)
    assert set(data.splits) == {"test"} and len(data.splits["test"]) == len(data) == 4


def test_data_boxes_writes_a_periodic_dataset_the_schema_reads(tmp_path):
    import subprocess
    import sys

    from deploycc.data.schema import read_h5

    out = tmp_path / "boxes.h5"
    done = subprocess.run([sys.executable, "-m", "deploycc", "data", "boxes", "--out", str(out), "--teacher", "emt",
                           "--waters", "6", "--max-boxes", "3", "--rattles", "2"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = read_h5(out)
    assert len(data) == 6 and data.pbc.all() and data.attrs["generator"] == "deploycc data boxes"
    assert sorted(len(idx) for idx in data.splits.values()) == [2, 2, 2]  # one box per split
