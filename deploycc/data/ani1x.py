"""The ANI-1x teacher: a client of `ani_worker.py` running in an interpreter that has torchani 2.2.4.

Which interpreter: `$DEPLOYCC_ANI_PYTHON`, else `.venv-ani/bin/python` in the checkout deploycc runs from
(`make ani-venv` makes it; never one from the working directory), else this one when it imports torchani.  One server process per
client process is started on first use and kept (about 3 s to load the 8 networks); requests are batched
by the server (about 1.3 ms per 9-atom molecule in batches, 16 ms alone, on one core).
"""

from __future__ import annotations

import atexit
import collections
import importlib.util
import io
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ..errors import MissingDependencyError, UserInputError
from . import ani_worker

ELEMENTS = frozenset(ani_worker.ELEMENTS)
WORKER = Path(ani_worker.__file__).resolve()
INSTALL_HINT = ("teacher 'ani1x' needs an interpreter with torch and torchani==2.2.4 (its wheel ships the ANI-1x "
                "weights; it needs setuptools<70): run `make ani-venv`, or set DEPLOYCC_ANI_PYTHON=/path/to/python")


def _has_torchani() -> bool:
    try:
        return importlib.util.find_spec("torchani") is not None and importlib.util.find_spec("pkg_resources") is not None
    except (ImportError, ValueError):
        return False


def interpreter() -> str:
    """The Python that runs the ANI-1x server (see the module docstring for the order)."""
    chosen = os.environ.get("DEPLOYCC_ANI_PYTHON")
    if chosen:
        if not Path(chosen).is_file():
            raise MissingDependencyError(f"DEPLOYCC_ANI_PYTHON={chosen} does not exist; {INSTALL_HINT}")
        return chosen
    candidate = Path(__file__).resolve().parents[2] / ".venv-ani" / "bin" / "python"
    if candidate.is_file():
        return str(candidate)
    if _has_torchani():
        return sys.executable
    raise MissingDependencyError(INSTALL_HINT)


class Ani1xServer:
    """One ANI-1x server process; `label` is thread-safe (one request at a time)."""

    def __init__(self, python: str | None = None, threads: int = 1) -> None:
        self.python = python or interpreter()
        self._lock = threading.Lock()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        try:
            self._process = subprocess.Popen([self.python, str(WORKER), str(threads)], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        except OSError as exc:
            raise MissingDependencyError(f"cannot run {self.python} ({exc.strerror}); {INSTALL_HINT}") from None
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._drainer = threading.Thread(target=self._drain, daemon=True)  # a full stderr pipe would block it
        self._drainer.start()
        ready = self._receive()
        if ready is None or "ready" not in ready:
            self.close()
            self._drainer.join(timeout=5)  # the process has ended: its last stderr lines are still in the pipe
            detail = [line for line in self._stderr if line.strip()][-1:] or ["no output"]
            raise MissingDependencyError(f"the ANI-1x server ({self.python}) did not start: {detail[0]}; {INSTALL_HINT}")

    def _drain(self) -> None:
        for line in iter(self._process.stderr.readline, b""):
            self._stderr.append(line.decode(errors="replace").rstrip())

    def _receive(self) -> dict | None:
        payload = ani_worker.read_message(self._process.stdout)
        if payload is None:
            return None
        with np.load(io.BytesIO(payload)) as archive:
            return {key: archive[key] for key in archive.files}

    def label(self, structures: Sequence) -> tuple[np.ndarray, list[np.ndarray]]:
        """Energies (eV) and forces (eV/Å) of ase.Atoms without periodic axes, elements H C N O."""
        counts = np.array([len(a) for a in structures], dtype=np.int64)
        if len(counts) == 0:
            return np.zeros(0), []
        for k, atoms in enumerate(structures):
            if atoms.pbc.any():
                raise UserInputError(f"teacher 'ani1x' labels molecules only; structure {k} is periodic")
            outside = sorted(set(int(z) for z in atoms.numbers) - ELEMENTS)
            if outside:
                raise UserInputError(f"teacher 'ani1x' knows H C N O only; structure {k} holds atomic numbers {outside}")
        request = ani_worker.pack(numbers=np.concatenate([a.numbers for a in structures]).astype(np.int64),
                                  positions=np.concatenate([a.positions for a in structures]), counts=counts)
        with self._lock:
            if self._process.poll() is not None:
                raise MissingDependencyError(f"the ANI-1x server exited (code {self._process.returncode})")
            try:
                ani_worker.write_message(self._process.stdin, request)
                answer = self._receive()
            except BaseException:  # interrupted mid-answer: its rest would be read as the next one's
                self.close()
                raise
        if answer is None:
            raise MissingDependencyError("the ANI-1x server stopped answering")
        if "error" in answer:
            raise UserInputError(f"teacher 'ani1x' failed: {answer['error']}")
        offsets = np.concatenate([[0], np.cumsum(counts)])
        forces = answer["forces"]
        if answer["energies"].shape != (len(counts),) or forces.shape != (int(offsets[-1]), 3):
            self.close()
            raise MissingDependencyError("the ANI-1x server answered another request (shapes differ); it was stopped")
        return answer["energies"], [forces[offsets[k]:offsets[k + 1]] for k in range(len(counts))]

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                ani_worker.write_message(self._process.stdin, b"")
                self._process.wait(timeout=10)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            stream.close()
        with _shared_lock:
            if _shared.get(os.getpid()) is self:
                del _shared[os.getpid()]  # the next request starts a fresh server


_shared: dict[int, Ani1xServer] = {}
_shared_lock = threading.Lock()
_start_lock = threading.Lock()


def shared_server() -> Ani1xServer:
    """This process's server, started on first use (a forked child starts its own)."""
    with _start_lock:  # one start at a time; close() takes only _shared_lock, so a failed start cannot deadlock
        with _shared_lock:
            server = _shared.get(os.getpid())
        if server is None:
            server = Ani1xServer()
            with _shared_lock:
                _shared[os.getpid()] = server
            atexit.register(server.close)
        return server


def label_batch(structures: Sequence) -> tuple[np.ndarray, list[np.ndarray]]:
    """The Teacher.label_batch of 'ani1x': one batched request to this process's server."""
    return shared_server().label(structures)


class Ani1xCalculator(Calculator):
    """ASE calculator over the shared ANI-1x server (energy and forces of molecules, H C N O)."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        energies, forces = label_batch([self.atoms])
        self.results = {"energy": float(energies[0]), "free_energy": float(energies[0]), "forces": forces[0]}
