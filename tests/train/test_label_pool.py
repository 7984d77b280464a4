"""The held-out frames' teacher in several processes: the same labels, in order, as the teacher alone."""

from __future__ import annotations

import numpy as np
import pytest

from deploycc.data.teachers import get_teacher
from deploycc.model import preset_config
from deploycc.train.frames import conformers_of, labels_or_nan, rattled
from deploycc.train.label_pool import LabelPoolError, PooledTeacher
from deploycc.train.online import OnlineSettings, held_out, held_out_teacher, split_molecules

pytest.importorskip("rdkit")

SMILES = [(s, s) for s in ("C", "CC", "CO", "CCO", "CN", "C=O", "CC=O", "OCO", "NCO", "COC", "CCN", "CCCO")]


def test_pooled_labels_are_the_teachers_in_order_with_nan_for_a_failed_frame():
    from ase import Atoms

    pool = conformers_of([(0, "CCO"), (1, "CN"), (2, "C=O")], 1, seed=0)
    structures = [atoms for _, atoms in rattled(pool, 5, np.random.default_rng(1))]
    structures.insert(2, Atoms("U2", positions=[[0, 0, 0], [0, 0, 2.5]]))  # EMT has no uranium: that frame fails
    alone = labels_or_nan(get_teacher("emt"), structures)
    with PooledTeacher("emt", 2) as pooled:
        energies, forces = labels_or_nan(pooled, structures)
    assert np.isnan(energies[2]) and np.isnan(forces[2]).all()
    keep = [k for k in range(len(structures)) if k != 2]
    assert np.allclose(np.asarray(energies)[keep], np.asarray(alone[0])[keep], rtol=0, atol=1e-10)
    assert all(np.allclose(forces[k], alone[1][k], atol=1e-10) for k in keep)


def test_held_out_frames_are_the_same_labelled_in_one_process_or_two():
    settings = OnlineSettings(eval_frames=2, seed=4, nms_fraction=0.25)
    molecules = split_molecules(SMILES, settings.seed)
    cutoff = preset_config("ultra-tiny").cutoff
    serial = held_out(get_teacher("emt"), molecules, settings, cutoff)
    with held_out_teacher(get_teacher("emt"), workers=2) as labeller:
        assert isinstance(labeller, PooledTeacher)
        pooled = held_out(labeller, molecules, settings, cutoff)
    for one, two in zip(serial, pooled):
        assert len(one.energies) == len(two.energies) > 0
        assert np.allclose(one.energies, two.energies, rtol=0, atol=1e-10)
        assert all(np.array_equal(a, b) for a, b in zip(one.positions, two.positions))


def test_one_worker_or_a_batched_teacher_labels_the_held_out_frames_in_this_process():
    for name, workers in (("emt", 1), ("ani1x", 4)):  # ANI-1x labels whole batches in its own server already
        teacher = get_teacher(name)
        with held_out_teacher(teacher, workers) as labeller:
            assert labeller is teacher


@pytest.mark.parametrize("teacher, message", [("dying_teacher:make", "died"),
                                              ("no_such_module_xyz:make", "no_such_module_xyz")])
def test_a_pool_process_that_dies_or_cannot_load_its_teacher_is_one_error_not_a_hang(teacher, message):
    pool = conformers_of([(0, "CO")], 1, seed=0)
    structures = [atoms for _, atoms in rattled(pool, 2, np.random.default_rng(0))]
    with PooledTeacher(teacher, 2) as pooled:
        with pytest.raises(LabelPoolError, match=message):
            labels_or_nan(pooled, structures)  # not swallowed as frames the teacher failed on
