"""A teacher that labels one frame at a time (GFN2-xTB, EMT, any ASE calculator), spread over processes: the
held-out frames of online distillation are labelled before the labelling workers start, so their cores would
otherwise wait.  Labels are the teacher's, frame for frame in order, so a held-out set is the same however many
processes label it; a frame the teacher fails on gets NaN labels, as `frames.labelled` expects.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any, Sequence

import numpy as np

_TEACHER: Any = None  # the teacher of a pool process


def _start(teacher_name: str) -> None:
    import torch

    from ..data.teachers import get_teacher

    global _TEACHER
    torch.set_num_threads(1)
    _TEACHER = get_teacher(teacher_name)


def _label_chunk(structures: list) -> tuple[list[float], list[np.ndarray]]:
    from .frames import labels_or_nan

    return labels_or_nan(_TEACHER, structures)


class PooledTeacher:
    """`label(structures)` as the teacher's, computed by `processes` spawned processes (a context manager)."""

    def __init__(self, teacher_name: str, processes: int) -> None:
        self.processes = processes
        self.pool = mp.get_context("spawn").Pool(processes, initializer=_start, initargs=(teacher_name,))

    def label(self, structures: Sequence[Any]) -> tuple[np.ndarray, list[np.ndarray]]:
        chunks = [list(part) for part in np.array_split(np.arange(len(structures)), self.processes) if len(part)]
        energies: list[float] = []
        forces: list[np.ndarray] = []
        for chunk_energies, chunk_forces in self.pool.map(_label_chunk, [[structures[k] for k in c] for c in chunks]):
            energies.extend(chunk_energies)
            forces.extend(chunk_forces)
        return np.asarray(energies, dtype=np.float64), forces

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()

    def __enter__(self) -> "PooledTeacher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
