"""The labelling workers of online distillation: their seed streams, their errors, and their shutdown.
The teacher is ASE's EMT (real, fast, H C N O as a toy)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from deploycc.errors import MissingDependencyError, UserInputError
from deploycc.train.labellers import Labellers, _raised
from deploycc.train.online import OnlineSettings, split_molecules

SMILES = [(s, s) for s in ("C", "CC", "CCC", "CO", "CCO", "CN", "CCN", "C=O", "CC=O", "OCO", "NCO", "COC",
                           "CCCO", "CC(C)O", "CC(N)O", "C#N", "CC#N", "N#CO", "CNC", "OCCO")]


def test_another_stream_samples_other_frames_of_the_same_split():
    settings = OnlineSettings(steps=1, batch_size=3, conformers=1, seed=2, prefetch=1)
    molecules = split_molecules(SMILES, 2)["train"][:5]
    firsts = []
    for stream in (0, 1):
        labellers = Labellers("emt", molecules, replace(settings, stream=stream), cutoff=5.0)
        try:
            firsts.append(labellers.next())
        finally:
            labellers.close()
    a, b = firsts
    assert not any(p.shape == q.shape and np.allclose(p, q) for p in a.positions for q in b.positions)


def test_worker_errors_keep_their_kind_and_a_dead_teacher_is_one_line():
    assert isinstance(_raised("UserInputError", "x"), UserInputError)
    assert isinstance(_raised("MissingDependencyError", "x"), MissingDependencyError)
    assert type(_raised("bug", "Traceback ...")) is RuntimeError  # a bug keeps its traceback text
    labellers = Labellers("no_such_module_for_tests:factory", split_molecules(SMILES, 0)["train"][:3],
                          OnlineSettings(steps=1, batch_size=2, conformers=1), cutoff=5.0)
    try:
        with pytest.raises(UserInputError, match="teacher 'no_such_module_for_tests:factory' cannot be imported"):
            labellers.next(timeout=120)
    finally:
        labellers.close()


def test_close_ends_workers_whose_queues_are_full_without_killing_them():
    # Batches of 64 frames outgrow a pipe's buffer: a worker whose queue is full still has a batch in its feeder
    # thread at exit, and exits only once that batch is read.
    settings = OnlineSettings(steps=1, batch_size=64, conformers=2, seed=0, prefetch=2, workers=3)
    labellers = Labellers("emt", split_molecules(SMILES, 0)["train"], settings, cutoff=5.0)
    try:
        deadline = time.monotonic() + 120
        while not all(q.full() for q in labellers.queues) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(q.full() for q in labellers.queues), "the workers did not fill their queues in 2 minutes"
    finally:
        labellers.close()
    assert [p.exitcode for p in labellers.processes] == [0, 0, 0]  # each exited by itself, none terminated
