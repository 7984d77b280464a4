"""Dask distributed for the embarrassingly parallel stages (`predict`, `data generate`).

`--cluster local:N` starts a LocalCluster of N single-threaded worker processes for the run and stops it at
the end; `--cluster tcp://HOST:PORT` connects to a running scheduler (one started by dask-jobqueue on Slurm
or PBS, by Kubernetes, or by `dask scheduler` / `dask worker`), whose workers must see the same files.
Work goes out as one task per chunk, at most a few per worker in flight, and results come back in input
order; a worker that dies mid-task has its task rerun elsewhere (the scheduler's own retry of lost tasks,
plus `retries` for tasks that raise).  `distributed` is an optional extra (`pip install deploycc[cluster]`).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from ..errors import MissingDependencyError, UserInputError

IN_FLIGHT_PER_WORKER = 2  # queued tasks per worker: keeps every worker busy, bounds the memory of results
RETRIES = 2  # reruns of a task that raised (a lost worker's tasks are rerun by the scheduler regardless)
CONNECT_TIMEOUT = "10s"  # to reach a remote scheduler
# Dask's nanny sets MALLOC_TRIM_THRESHOLD_ before it starts a worker; setting it at all freezes glibc's mmap
# threshold at 128 KiB, so every larger tensor of a torch teacher or student is a fresh mmap with its page faults
# (lab/dask_overhead.py, docs/distributed.md). None unsets it and leaves Dask's other variables.
UNSET_MALLOC_TRIM = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


@dataclass(frozen=True)
class ClusterSpec:
    """Where tasks run: `workers` local processes, or the scheduler at `address`."""

    workers: int = 0
    address: str = ""

    @property
    def local(self) -> bool:
        return not self.address


def parse_cluster(spec: str) -> ClusterSpec:
    """'local:N' (1 <= N <= 256) or a scheduler address 'tcp://HOST:PORT' (also tls://, ws://)."""
    text = str(spec).strip()
    match = re.fullmatch(r"local:(\d+)", text)
    if match:
        workers = int(match.group(1))
        if not 1 <= workers <= 256:
            raise UserInputError(f"--cluster {text}: the number of local workers must be 1..256")
        return ClusterSpec(workers=workers)
    if re.fullmatch(r"(tcp|tls|ws|wss)://[^\s/:]+:\d+", text):
        return ClusterSpec(address=text)
    raise UserInputError(f"--cluster {text!r}: give local:N (N worker processes here) or tcp://HOST:PORT "
                         "(a running Dask scheduler)")


def _worker_env(workers: int) -> dict[str, str]:
    """Threads and memory budget of each local worker: the machine's cores and half its free memory,
    shared out, so N workers do not oversubscribe what one process would use."""
    from .predictor import available_memory

    threads = max(1, (os.cpu_count() or 1) // workers)
    budget = available_memory("cpu") / workers
    return {"OMP_NUM_THREADS": str(threads), "DEPLOYCC_WORKER_THREADS": str(threads),
            "DEPLOYCC_MEMORY_BUDGET_GB": f"{budget / 1e9:.3f}"}


@contextmanager
def dask_client(spec: ClusterSpec) -> Iterator[Any]:
    """A connected distributed.Client for the run; a local cluster is started here and stopped after."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise MissingDependencyError("--cluster needs Dask distributed: pip install 'deploycc[cluster]'") from None
    if spec.local:
        import dask

        with dask.config.set(UNSET_MALLOC_TRIM):
            cluster = LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR,
                                   env=_worker_env(spec.workers))
        client = Client(cluster)
    else:
        cluster = None
        try:
            client = Client(spec.address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise UserInputError(f"--cluster {spec.address}: no Dask scheduler answered ({exc})") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


@contextmanager
def connected(cluster: Any) -> Iterator[Any]:
    """A client for `cluster`: a ClusterSpec is connected (and a local one started) for the block, a
    distributed.Client given by the caller is used as it is and left open."""
    if isinstance(cluster, ClusterSpec):
        with dask_client(cluster) as client:
            yield client
    else:
        yield cluster


def ordered_map(client: Any, function: Callable, items: Iterable, *args: Any) -> Iterator[tuple[Any, Any]]:
    """(item, function(item, *args)) for every item, in input order, computed on the cluster with a bounded
    number of tasks in flight.  A task's own exception is re-raised here (after its retries)."""
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    limit = IN_FLIGHT_PER_WORKER * workers
    queue: deque = deque()
    for item in items:
        queue.append((item, client.submit(function, item, *args, retries=RETRIES, pure=False)))
        if len(queue) >= limit:
            done, future = queue.popleft()
            yield done, future.result()
    while queue:
        done, future = queue.popleft()
        yield done, future.result()


_PREDICTORS: dict[tuple[str, str | None, str], Any] = {}
_PREDICTORS_LOCK = threading.Lock()


def worker_predictor(source: str, device: str | None, unseen_elements: str) -> Any:
    """The Predictor of `source` in this worker process, opened once and kept for later tasks."""
    from .load import load

    key = (source, device, unseen_elements)
    with _PREDICTORS_LOCK:
        if key not in _PREDICTORS:
            threads = os.environ.get("DEPLOYCC_WORKER_THREADS")
            if threads:
                import torch

                torch.set_num_threads(int(threads))
            _PREDICTORS[key] = load(source, device, unseen_elements)
        return _PREDICTORS[key]


def evaluate_chunk(chunk: list, source: str, device: str | None, unseen_elements: str) -> tuple:
    """Energies, forces and stresses of one chunk of ase.Atoms (validated by the client beforehand)."""
    return worker_predictor(source, device, unseen_elements).evaluate(chunk, check=False)
