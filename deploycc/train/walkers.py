"""Teacher molecular dynamics for many molecules at once: Langevin walkers advanced in lock-step, one batched
teacher call per step for all of them, so a fast batched teacher (ANI-1x) samples thermal frames at its
batch rate.  The labels of a step are the teacher's energies and forces at the walkers' new positions, so
every kept frame is labelled exactly, at no extra cost.

The integrator is BAOAB (Leimkuhler & Matthews), friction `FRICTION` (1/fs).  A walker lives for a fixed
number of kept frames, then restarts on another conformer of the pool at another temperature; a walker whose
labels are not finite or whose forces exceed `max_force` restarts at once and its frame is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..data.generate import MAX_FORCE

TEMPERATURES = (300.0, 1000.0)  # K: a walker's temperature is drawn uniformly in this range
TIMESTEP = 0.5  # fs
FRICTION = 0.01  # 1/fs: a 100 fs relaxation time thermalises a walker within its first few hundred steps
BURN_IN = 40  # steps before a new walker's first kept frame: the start is an RDKit geometry, not a minimum
MAX_FAILED_CALLS = 3  # teacher calls in a row with no walker labelled: the teacher fails them all, stop asking
KB = 8.617333262e-5  # eV/K
# ASE's units: time in sqrt(amu Å² / eV); one femtosecond is this many of them.
FS = 1e-15 / np.sqrt(1.66053906660e-27 * 1e-20 / 1.602176634e-19)


@dataclass
class _Walker:
    mol_id: int
    atoms: Any  # ase.Atoms: numbers and positions are the walker's state
    velocities: np.ndarray
    masses: np.ndarray
    temperature: float
    forces: np.ndarray | None = None  # the teacher's forces at the current positions; None before the first call
    steps: int = 0
    kept: int = 0


@dataclass
class Walkers:
    """`count` Langevin walkers over a pool of (molecule id, ase.Atoms) conformers."""

    pool: Sequence[tuple[int, Any]]
    count: int
    stride: int  # steps between a walker's kept frames
    lifetime: int  # kept frames before a walker restarts elsewhere
    rng: np.random.Generator
    temperatures: tuple[float, float] = TEMPERATURES
    max_force: float = MAX_FORCE
    in_order: bool = False  # the first walkers take the pool's conformers in turn (held-out sets), else at random
    walkers: list[_Walker] = field(default_factory=list)
    restarts: int = 0  # walkers restarted because the teacher's labels went bad
    calls: int = 0  # teacher calls made
    failed_calls: int = 0  # consecutive calls in which the teacher labelled no walker
    _ready: list = field(default_factory=list)  # kept frames not yet handed out

    def __post_init__(self) -> None:
        if not self.pool:
            raise ValueError("walkers need at least one conformer")
        self.walkers = [self._spawn(k if self.in_order else None) for k in range(self.count)]
        for k, walker in enumerate(self.walkers):  # staggered, so each step keeps about count/stride frames
            walker.steps = -(k % self.stride)

    def _spawn(self, index: int | None = None) -> _Walker:
        index = int(self.rng.integers(len(self.pool))) if index is None else index % len(self.pool)
        mol_id, atoms = self.pool[index]
        atoms = atoms.copy()
        masses = atoms.get_masses()
        temperature = float(self.rng.uniform(*self.temperatures))
        velocities = self.rng.normal(size=atoms.positions.shape) * np.sqrt(KB * temperature / masses)[:, None]
        velocities -= (masses[:, None] * velocities).sum(0) / masses.sum()  # no drift of the centre of mass
        return _Walker(mol_id, atoms, velocities, masses, temperature)

    def _move(self, w: _Walker) -> None:
        """B A O A of BAOAB; the last B waits for the forces of the coming teacher call."""
        dt = TIMESTEP * FS
        w.velocities += 0.5 * dt * w.forces / w.masses[:, None]
        w.atoms.positions += 0.5 * dt * w.velocities
        c1 = np.exp(-FRICTION * TIMESTEP)
        noise = self.rng.normal(size=w.velocities.shape) * np.sqrt(KB * w.temperature / w.masses)[:, None]
        w.velocities = c1 * w.velocities + np.sqrt(1.0 - c1 * c1) * noise
        w.atoms.positions += 0.5 * dt * w.velocities

    def step(self, label: Any) -> list[tuple[int, Any, float, np.ndarray]]:
        """One teacher call for every walker; the frames kept at this step as (molecule id, atoms, E, F)."""
        for w in self.walkers:
            if w.forces is not None:
                self._move(w)
        energies, forces = label([w.atoms for w in self.walkers])
        self.calls += 1
        kept, bad = [], 0
        for k, w in enumerate(self.walkers):
            energy, force = float(energies[k]), np.asarray(forces[k], dtype=np.float64)
            if not (np.isfinite(energy) and np.isfinite(force).all() and np.abs(force).max() <= self.max_force):
                self.walkers[k] = self._spawn()
                self.restarts += 1
                bad += 1
                continue
            if w.forces is not None:
                w.velocities += 0.5 * TIMESTEP * FS * force / w.masses[:, None]
            w.forces = force
            w.steps += 1
            if w.steps > BURN_IN and (w.steps - BURN_IN) % self.stride == 0:
                kept.append((w.mol_id, w.atoms.copy(), energy, force.copy()))
                w.kept += 1
                if w.kept >= self.lifetime:
                    self.walkers[k] = self._spawn()
        self.failed_calls = self.failed_calls + 1 if bad == len(self.walkers) else 0
        return kept

    def frames(self, label: Any, count: int) -> list[tuple[int, Any, float, np.ndarray]]:
        """The next `count` kept frames (teacher calls until there are; the rest wait for the next request).
        Fewer when the teacher labels no walker `MAX_FAILED_CALLS` calls in a row."""
        while len(self._ready) < count and self.failed_calls < MAX_FAILED_CALLS:
            self._ready.extend(self.step(label))
        out, self._ready = self._ready[:count], self._ready[count:]
        return out


def kinetic_temperature(walker: _Walker) -> float:
    """The walker's instantaneous kinetic temperature (K)."""
    kinetic = 0.5 * (walker.masses[:, None] * walker.velocities ** 2).sum()
    return float(2.0 * kinetic / (3 * len(walker.masses) * KB))
