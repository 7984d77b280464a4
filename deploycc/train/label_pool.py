"""A teacher that labels one frame at a time (GFN2-xTB, EMT, any ASE calculator), spread over processes: the
held-out frames of online distillation are labelled before the labelling workers start, so their cores would
otherwise wait.  Labels come back frame for frame in order; a frame the teacher fails on gets NaN labels, as
`frames.labelled` expects.  A teacher whose result depends on the frames labelled before it in one call (tblite
starts each SCF from the previous frame's solution) gives labels equal within its SCF tolerance, not bit for bit,
for another number of processes.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Sequence

import numpy as np

from ..errors import DeployccError, MissingDependencyError

_TEACHER: Any = None  # the teacher of a pool process
_START_ERROR = ""  # why it could not be made (raised at the first chunk, so that the trainer gets one line)


class LabelPoolError(DeployccError):
    """A labelling process died (out of memory, a crash) or could not start its teacher."""


def _start(teacher_name: str) -> None:
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle; it closes the pool
    os.environ["OMP_NUM_THREADS"] = "1"  # before the teacher loads its OpenMP runtime (tblite)
    import torch

    from ..data.teachers import get_teacher

    global _TEACHER, _START_ERROR
    torch.set_num_threads(1)
    try:
        _TEACHER = get_teacher(teacher_name)
    except Exception as exc:  # noqa: BLE001 - reported by the first chunk, not as a pool-worker traceback
        _START_ERROR = f"{type(exc).__name__}: {exc}"


def _label_chunk(structures: list) -> tuple[list[float], list[np.ndarray]]:
    from .frames import labels_or_nan

    if _START_ERROR:
        raise RuntimeError(_START_ERROR)
    return labels_or_nan(_TEACHER, structures)


class PooledTeacher:
    """`label(structures)` as the teacher's, computed by `processes` spawned processes (a context manager)."""

    def __init__(self, teacher_name: str, processes: int) -> None:
        self.name = teacher_name
        self.processes = processes
        self.pool = ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn"), initializer=_start,
                                        initargs=(teacher_name,))

    def label(self, structures: Sequence[Any]) -> tuple[np.ndarray, list[np.ndarray]]:
        chunks = [list(part) for part in np.array_split(np.arange(len(structures)), self.processes) if len(part)]
        energies: list[float] = []
        forces: list[np.ndarray] = []
        try:
            results = list(self.pool.map(_label_chunk, [[structures[k] for k in c] for c in chunks]))
        except MissingDependencyError:
            raise
        except BrokenProcessPool:
            raise LabelPoolError(f"a process labelling the held-out frames with teacher '{self.name}' died (out of "
                                 "memory, or a crash)") from None
        except Exception as exc:  # noqa: BLE001 - teacher errors of a frame are NaN in the chunk: this is the pool's
            raise LabelPoolError(f"the processes labelling the held-out frames could not use teacher '{self.name}': "
                                 f"{exc}") from None
        for chunk_energies, chunk_forces in results:
            energies.extend(chunk_energies)
            forces.extend(chunk_forces)
        return np.asarray(energies, dtype=np.float64), forces

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "PooledTeacher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
