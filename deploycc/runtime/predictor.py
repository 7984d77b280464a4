"""Predictor: energies, forces and stresses of lists of structures through one artifact's runner.

A request is validated (deploycc/runtime/validate.py), its neighbour lists are built once, and it is split
into calls that fit both the artifact's atoms profile and a memory budget, estimated before any call runs
from the target's memory model (base + per atom + per neighbour slot).  Structures of similar neighbour
counts share a call (the slot width M is the largest in the call).  A single structure above the budget is
refused with one line naming the estimate and the budget, never an out-of-memory kill.  Non-finite
results are an error, never returned.  One call runs at a time: a Predictor may be shared by threads.
"""

from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np

from ..errors import UserInputError
from ..model.forces import stress_from_virial
from ..targets.base import Prediction, Runner
from ..targets.settings import TargetSettings
from .neighbours import HalfList, NeighbourBatch, Structure, assemble
from .validate import Rules, as_structure, half_list, label_of, validated

MEMORY_FRACTION_CPU = 0.5  # of MemAvailable
MEMORY_FRACTION_CUDA = 0.8  # of the free GPU memory


class NonFiniteResultError(UserInputError):
    """A model produced NaN or infinite energies, forces or virials."""


def available_memory(device: str) -> float:
    """Bytes a request may use: $DEPLOYCC_MEMORY_BUDGET_GB, else a fraction of what is free on `device`."""
    override = os.environ.get("DEPLOYCC_MEMORY_BUDGET_GB")
    if override:
        try:
            return float(override) * 1e9
        except ValueError:
            raise UserInputError(f"DEPLOYCC_MEMORY_BUDGET_GB must be a number of GB, got '{override}'") from None
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return MEMORY_FRACTION_CUDA * free
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return MEMORY_FRACTION_CPU * int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8e9


class Predictor:
    """Energies [S] (eV), forces [n_k, 3] (eV/Å) and stresses [S, 3, 3] (eV/Å^3) of lists of ase.Atoms."""

    def __init__(self, runner: Runner, settings: TargetSettings, rules: Rules, memory_budget: float | None = None):
        self.runner = runner
        self.settings = settings
        self.rules = rules
        self.memory_budget = memory_budget
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return self.rules.label

    @property
    def cutoff(self) -> float:
        return self.rules.cutoff

    @property
    def elements(self) -> frozenset[int] | None:
        return self.rules.elements

    def budget(self) -> float:
        return self.memory_budget if self.memory_budget is not None else available_memory(self.settings.device)

    def validate(self, atoms_list: Sequence, first_index: int = 0) -> list[tuple[Structure, HalfList]]:
        """Every structure with its neighbour list, after the checks (the first bad one is refused by its
        index, counted from `first_index` when `atoms_list` is one chunk of a longer file)."""
        if not isinstance(atoms_list, (list, tuple)):
            atoms_list = _as_list(atoms_list)
        return [validated(a, f"structure {k}", self.rules) for k, a in enumerate(atoms_list, start=first_index)]

    def predict(self, atoms_list: Sequence) -> tuple[np.ndarray, list[np.ndarray]]:
        """Energies [S] in eV and per-structure forces [n_k, 3] in eV/Å."""
        energies, forces, _stresses = self.evaluate(atoms_list)
        return energies, forces

    def evaluate(self, atoms_list: Sequence, check: bool = True
                 ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """Energies [S], forces [n_k, 3] and stresses [S, 3, 3] (ASE's convention: -W / V with V the volume
        of the cell as given; NaN for structures without periodic axes).  `check=False` skips the checks
        for structures the caller has already validated."""
        items = list(atoms_list) if isinstance(atoms_list, (list, tuple)) else _as_list(atoms_list)
        if check:
            prepared = self.validate(items)
        else:
            prepared = [(s, half_list(s, self.cutoff)) for s in
                        (as_structure(a, f"structure {k}") for k, a in enumerate(items))]
        energies = np.zeros(len(prepared))
        forces: list[np.ndarray] = [np.zeros((0, 3))] * len(prepared)
        stresses = np.full((len(prepared), 3, 3), np.nan)
        for call in self.plan(prepared):
            batch = assemble([prepared[k][0] for k in call], [prepared[k][1] for k in call])
            result = self.run(batch, call)
            for row, k in enumerate(call):
                structure = prepared[k][0]
                energies[k] = result.energies[row]
                forces[k] = result.forces_of(row)
                if structure.periodic:
                    stresses[k] = stress_from_virial(result.virials[row], structure.cell)
        return energies, forces, stresses

    def run(self, batch: NeighbourBatch, indices: Sequence[int] | None = None) -> Prediction:
        """One runner call on a prepared batch; non-finite results are refused, naming the structure."""
        with self._lock:
            result = self.runner.infer(batch)
        finite = (np.isfinite(result.energies) & np.isfinite(result.virials).all(axis=(1, 2))
                  & np.array([np.isfinite(result.forces_of(k)).all() for k in range(batch.structures)], dtype=bool))
        if not finite.all():
            row = int(np.argmin(finite))
            k = row if indices is None else int(indices[row])
            numbers = batch.numbers[batch.offsets[row] : batch.offsets[row + 1]]
            raise NonFiniteResultError(f"{label_of(f'structure {k}', numbers)}: {self.label} gave NaN or infinite "
                                       "energies or forces (extreme coordinates, or non-finite weights)")
        return result

    def plan(self, prepared: Sequence[tuple[Structure, HalfList]]) -> list[list[int]]:
        """Calls of structures that fit the atoms profile and the memory budget, similar slot counts together;
        the first structure (by index) that fits in no call is refused."""
        budget, memory, limit = self.budget(), self.settings.memory, self.settings.atoms.max
        width = [max(int(half.degree(len(s)).max(initial=0)), 1) for s, half in prepared]
        for k, (structure, _half) in enumerate(prepared):
            self.check_fits(structure, width[k], f"structure {k}", budget)
        calls: list[list[int]] = []
        current: list[int] = []
        atoms = slots = 0
        for k in sorted(range(len(prepared)), key=lambda k: (width[k], len(prepared[k][0]))):
            n, m = len(prepared[k][0]), width[k]
            if current and (atoms + n > limit or memory.estimate(atoms + n, max(slots, m)) > budget):
                calls.append(current)
                current, atoms, slots = [], 0, 0
            current.append(k)
            atoms, slots = atoms + n, max(slots, m)
        return calls + ([current] if current else [])

    def check_fits(self, structure: Structure, slots: int, where: str, budget: float | None = None) -> None:
        """Refuse (one line naming `where`) a structure above the atoms profile, or whose call alone would
        need more memory than the budget (`slots`: its neighbour slots per atom)."""
        budget = self.budget() if budget is None else budget
        n, m, limit = len(structure), max(int(slots), 1), self.settings.atoms.max
        name = label_of(where, structure.numbers)
        if n > limit:
            raise UserInputError(f"{name} has {n} atoms; {self.label} takes at most {limit} per call (its atoms "
                                 "profile)")
        need = self.settings.memory.estimate(n, m)
        if need > budget:
            raise UserInputError(f"{name} ({n} atoms, {m} neighbours per atom) needs an estimated "
                                 f"{gigabytes(need)}, above the {gigabytes(budget)} memory budget of {self.label} "
                                 "(set DEPLOYCC_MEMORY_BUDGET_GB, or use a target with less memory per neighbour)")


def gigabytes(size: float) -> str:
    """Bytes as GB with three significant digits (an estimate just above a budget must not read as equal)."""
    return f"{size / 1e9:.3g} GB"


def _as_list(value) -> list:
    """A request that is not a list: one ase.Atoms is refused with a hint, other types by as_structure."""
    from ase import Atoms

    if isinstance(value, Atoms):
        raise UserInputError("give a list of ase.Atoms, not a single ase.Atoms (wrap it: [atoms])")
    if isinstance(value, (str, bytes, dict)) or value is None or not hasattr(value, "__iter__"):
        raise UserInputError(f"give a list of ase.Atoms, got a {type(value).__name__}")
    return list(value)
