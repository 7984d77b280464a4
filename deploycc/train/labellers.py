"""The labelling workers of online distillation: processes that make fresh frames of the training molecules
and label them with the teacher, a queue each, ahead of the optimiser (online.py)."""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import time
from typing import Any, Sequence

import numpy as np
import torch

from ..data.normal_modes import NormalModeSampler
from ..errors import DeployccError, UserInputError
from .frames import Frames, box_pool, conformers_of, joined, labelled, rattled, thermal
from .online_settings import OnlineSettings
from .walkers import Walkers

CLOSE_SECONDS = 15.0  # for all workers together: each finishes the batch it is labelling, then exits
MD_LIFETIME = 50  # training frames a walker gives before it restarts on another conformer


def unlabelled_batch(pool: list[tuple[int, Any]], sampler: NormalModeSampler | None, s: OnlineSettings,
                     worker: int, k: int, boxes: Sequence[tuple[int, Any]] = ()) -> list[tuple[int, Any]]:
    """The rattled, normal-mode and periodic-box frames of batch k of a worker (teacher-MD frames come from its
    walkers); with `s.box_every`, every that-many-th batch one rattled box of `boxes` takes a rattle's place."""
    stream = [s.stream] if s.stream else []
    box = int(bool(boxes) and s.box_every > 0 and k % s.box_every == s.box_every - 1)
    frames = rattled(pool, s.batch_size - s.thermal_count() - s.nms_count() - box,
                     np.random.default_rng([s.seed, worker, k] + stream))
    if s.nms_count():  # a key of its own, so that its draws never overlap the rattles'
        assert sampler is not None, "normal-mode frames need a sampler"
        frames += sampler.frames(s.nms_count(), np.random.default_rng([s.seed, worker, k, 2 * 10**6, s.stream]))
    if box:
        frames += rattled(boxes, 1, np.random.default_rng([s.seed, worker, k, 3 * 10**6, s.stream]))
    return frames


def _worker(worker: int, teacher_name: str, smiles: list[tuple[int, str]], settings: OnlineSettings, cutoff: float,
            out: Any, stop: Any) -> None:
    """A labelling process: batches (worker, k) into `out` until `stop` is set."""
    import signal
    import traceback

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle; it stops the workers
    torch.set_num_threads(1)
    try:
        from ..data.teachers import get_teacher

        teacher = get_teacher(teacher_name)
        pool = conformers_of(smiles, settings.conformers, settings.seed)
        if not pool:
            raise UserInputError("no training molecule could be embedded by RDKit")
        stream = [settings.stream] if settings.stream else []
        thermal_count = settings.thermal_count()
        md_key = [settings.seed, worker, 3, 10**6] + stream  # one element longer than the rattles' keys
        walkers = (Walkers(pool, settings.md_walkers, settings.md_stride, MD_LIFETIME, np.random.default_rng(md_key))
                   if thermal_count else None)
        nms_count = settings.nms_count()
        sampler = NormalModeSampler(pool, dict(smiles)) if nms_count else None
        boxes = box_pool(smiles, settings.conformers, settings.seed) if settings.box_every else []
        if settings.box_every and not boxes:
            raise UserInputError("--box-every: no training cluster could be packed as a periodic box")
        k = 0
        while not stop.is_set():
            frames = unlabelled_batch(pool, sampler, settings, worker, k, boxes)
            parts = [labelled(teacher, frames, cutoff)] if frames else []
            if walkers is not None:
                parts.append(thermal(walkers, teacher, thermal_count, cutoff))
                if walkers.exhausted:
                    raise UserInputError(f"teacher MD: teacher '{teacher_name}' keeps failing the walkers (no frame "
                                         f"in {walkers.barren_calls} calls); lower --md-fraction to 0")
            batch = joined(parts) if len(parts) > 1 else parts[0]
            while not stop.is_set():
                try:
                    out.put(("batch", batch), timeout=0.5)
                    break
                except queue_module.Full:
                    continue
            k += 1
    except DeployccError as exc:  # the trainer raises the same kind, so the exit code is the same
        out.put(("error", (type(exc).__name__, str(exc))))
    except Exception:  # noqa: BLE001 - a bug: the trainer raises it with the worker's traceback
        out.put(("error", ("bug", f"labelling worker {worker} failed:\n{traceback.format_exc()}")))


def _raised(kind: str, message: str) -> Exception:
    """The trainer's side of a worker's error: the same user-error class, or a bug with its traceback."""
    from .. import errors

    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, DeployccError):
        return cls(message)
    return RuntimeError(message)


class Labellers:
    """The worker processes and their queues; batches come out in a fixed worker order."""

    def __init__(self, teacher: str, smiles: list[tuple[int, str]], settings: OnlineSettings, cutoff: float) -> None:
        context = mp.get_context("spawn")  # torch and the teacher's server are not fork-safe
        self.stop = context.Event()
        self.queues = [context.Queue(maxsize=settings.prefetch) for _ in range(settings.workers)]
        # Every worker samples every training molecule; their seed streams differ.
        self.processes = [context.Process(target=_worker, args=(w, teacher, smiles, settings, cutoff,
                                                                self.queues[w], self.stop), daemon=True)
                          for w in range(settings.workers)]
        for process in self.processes:
            process.start()
        self.turn = 0

    def next(self, timeout: float = 600.0) -> Frames:
        """The next worker's next batch; a worker that died (crash, OOM killer) or hangs is one error."""
        w = self.turn
        self.turn = (self.turn + 1) % len(self.queues)
        deadline = time.monotonic() + timeout
        while True:
            try:
                kind, payload = self.queues[w].get(timeout=1.0)
                break
            except queue_module.Empty:
                if not self.processes[w].is_alive():
                    raise DeployccError(f"labelling worker {w} exited (code {self.processes[w].exitcode}) "
                                        "without an error message: out of memory, or a crash") from None
                if time.monotonic() > deadline:
                    raise DeployccError(f"no labelled batch arrived within {timeout:.0f} s: labelling worker {w} "
                                        "hangs") from None
        if kind == "error":
            raise _raised(*payload)
        return payload

    def close(self) -> None:
        """Stop every worker within seconds: all are told at once, and their queues are read while they finish
        (a worker whose last batch sits in its queue's feeder waits for a reader before it can exit)."""
        self.stop.set()
        deadline = time.monotonic() + CLOSE_SECONDS
        while any(p.is_alive() for p in self.processes) and time.monotonic() < deadline:
            for q in self.queues:
                _drained(q)
            time.sleep(0.05)
        for process in self.processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=5)


def _drained(q: Any) -> None:
    """Read and drop what a queue holds now."""
    while True:
        try:
            q.get_nowait()
        except (queue_module.Empty, OSError, ValueError):
            return
