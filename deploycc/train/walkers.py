"""Teacher molecular dynamics for many molecules at once: Langevin walkers advanced in lock-step, one batched
teacher call per step for all of them, so a fast batched teacher (ANI-1x) samples thermal frames at its
batch rate.  The labels of a step are the teacher's energies and forces at the walkers' new positions, so
every kept frame is labelled exactly, at no extra cost.

The integrator is BAOAB (Leimkuhler & Matthews), friction `FRICTION` (1/fs).  A walker starts at a conformer
(near a minimum) with velocities at twice its temperature, so that kinetic energy flowing into the potential
leaves it near its temperature after the burn-in (equipartition), and the thermostat holds it there.  It
lives for a fixed number of kept frames, then restarts on another conformer at another temperature (or, for
held-out sets, retires); a walker whose labels are not finite or whose forces exceed `max_force` restarts at
once (held-out: on the same molecule, a few times) and that frame is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..data.generate import MAX_FORCE

TEMPERATURES = (300.0, 1000.0)  # K: a walker's temperature is drawn uniformly in this range
TIMESTEP = 0.5  # fs
FRICTION = 0.01  # 1/fs: weak coupling (100 fs), so that frames are close to Newtonian dynamics
BURN_IN = 40  # steps before a new walker's first kept frame: the start is an RDKit geometry, not a minimum
MAX_FAILED_CALLS = 3  # teacher calls in a row with no walker labelled: the teacher fails them all, stop asking
MAX_RETRIES = 3  # held-out walkers: restarts on one molecule before it is given up
KB = 8.617333262e-5  # eV/K
# ASE's units: time in sqrt(amu Å² / eV); one femtosecond is this many of them.
FS = 1e-15 / np.sqrt(1.66053906660e-27 * 1e-20 / 1.602176634e-19)

Label = Callable[[list], tuple[Sequence[float], Sequence[np.ndarray]]]


@dataclass
class _Walker:
    index: int  # in the pool
    mol_id: int
    atoms: Any  # ase.Atoms: numbers and positions are the walker's state
    velocities: np.ndarray
    masses: np.ndarray
    temperature: float
    forces: np.ndarray | None = None  # the teacher's forces at the current positions; None before the first call
    steps: int = 0
    kept: int = 0
    retired: bool = False


@dataclass
class Walkers:
    """`count` Langevin walkers over a pool of (molecule id, ase.Atoms) conformers."""

    pool: Sequence[tuple[int, Any]]
    count: int
    stride: int  # steps between a walker's kept frames
    lifetime: int  # kept frames before a walker restarts elsewhere (held-out: retires)
    rng: np.random.Generator
    temperatures: tuple[float, float] = TEMPERATURES
    max_force: float = MAX_FORCE
    in_order: bool = False  # held-out sets: walker k takes conformer k, keeps it through restarts, then retires
    walkers: list[_Walker] = field(default_factory=list)
    restarts: int = 0  # walkers restarted because the teacher's labels went bad
    calls: int = 0  # teacher calls made
    failed_calls: int = 0  # consecutive calls in which the teacher labelled no walker
    barren_calls: int = 0  # consecutive calls that kept no frame
    _ready: list = field(default_factory=list)  # kept frames not yet handed out
    _retries: dict = field(default_factory=dict)  # held-out: restarts per pool index

    def __post_init__(self) -> None:
        if not self.pool:
            raise ValueError("walkers need at least one conformer")
        self.walkers = [self._spawn(k if self.in_order else None) for k in range(self.count)]
        for k, walker in enumerate(self.walkers):
            walker.steps = -(k % self.stride)  # each call keeps about count/stride frames ...
            if not self.in_order:  # ... and the walkers do not all retire (and burn in) at once
                walker.kept = (k * self.lifetime) // self.count

    def _spawn(self, index: int | None = None) -> _Walker:
        index = int(self.rng.integers(len(self.pool))) if index is None else index % len(self.pool)
        mol_id, atoms = self.pool[index]
        atoms = atoms.copy()
        masses = atoms.get_masses()
        temperature = float(self.rng.uniform(*self.temperatures))
        velocities = self.rng.normal(size=atoms.positions.shape) * np.sqrt(KB * temperature / masses)[:, None]
        velocities -= (masses[:, None] * velocities).sum(0) / masses.sum()  # no drift of the centre of mass
        kinetic = 0.5 * (masses[:, None] * velocities ** 2).sum()
        # Exactly 2T over 3N degrees of freedom (the noise acts on the drift too); about half of it flows into
        # the potential energy within the burn-in.
        if kinetic > 0:
            velocities *= np.sqrt(3 * len(masses) * KB * 2.0 * temperature / (2.0 * kinetic))
        return _Walker(index, mol_id, atoms, velocities, masses, temperature)

    def _move(self, w: _Walker) -> None:
        """B A O A of BAOAB; the last B waits for the forces of the coming teacher call."""
        dt = TIMESTEP * FS
        w.velocities += 0.5 * dt * w.forces / w.masses[:, None]
        w.atoms.positions += 0.5 * dt * w.velocities
        c1 = np.exp(-FRICTION * TIMESTEP)
        noise = self.rng.normal(size=w.velocities.shape) * np.sqrt(KB * w.temperature / w.masses)[:, None]
        w.velocities = c1 * w.velocities + np.sqrt(1.0 - c1 * c1) * noise
        w.atoms.positions += 0.5 * dt * w.velocities

    def _restart(self, k: int) -> None:
        """Walker k's labels went bad: a new walker (held-out: on the same molecule, while retries last)."""
        self.restarts += 1
        index = self.walkers[k].index
        if not self.in_order:
            self.walkers[k] = self._spawn()
            return
        self._retries[index] = self._retries.get(index, 0) + 1
        fresh = self._spawn(index)
        fresh.kept = self.walkers[k].kept  # its frames so far stay; the molecule still gets `lifetime` in all
        fresh.retired = self._retries[index] > MAX_RETRIES
        self.walkers[k] = fresh

    def _retire(self, k: int) -> None:
        if self.in_order:
            self.walkers[k].retired = True
        else:
            self.walkers[k] = self._spawn()

    def step(self, label: Label) -> list[tuple[int, Any, float, np.ndarray]]:
        """One teacher call for every live walker; the frames kept at this step as (molecule id, atoms, E, F)."""
        live = [k for k, w in enumerate(self.walkers) if not w.retired]
        if not live:
            return []
        for k in live:
            if self.walkers[k].forces is not None:
                self._move(self.walkers[k])
        energies, forces = label([self.walkers[k].atoms for k in live])
        self.calls += 1
        kept, bad = [], 0
        for j, k in enumerate(live):
            w = self.walkers[k]
            energy, force = float(energies[j]), np.asarray(forces[j], dtype=np.float64)
            if not (np.isfinite(energy) and np.isfinite(force).all() and np.abs(force).max() <= self.max_force):
                self._restart(k)
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
                    self._retire(k)
        self.failed_calls = self.failed_calls + 1 if bad == len(live) else 0
        self.barren_calls = 0 if kept else self.barren_calls + 1
        return kept

    @property
    def exhausted(self) -> bool:
        """No more frames will come: every walker retired, or the teacher keeps failing them."""
        return (self.failed_calls >= MAX_FAILED_CALLS or self.barren_calls > 3 * (BURN_IN + self.stride)
                or all(w.retired for w in self.walkers))

    def frames(self, label: Label, count: int) -> list[tuple[int, Any, float, np.ndarray]]:
        """The next `count` kept frames (teacher calls until there are; the rest wait for the next request).
        Fewer once the walkers are `exhausted`."""
        while len(self._ready) < count and not self.exhausted:
            self._ready.extend(self.step(label))
        out, self._ready = self._ready[:count], self._ready[count:]
        return out


def kinetic_temperature(walker: _Walker) -> float:
    """The walker's instantaneous kinetic temperature (K) over its 3N degrees of freedom (Langevin noise
    thermalises the drift of the centre of mass too)."""
    kinetic = 0.5 * (walker.masses[:, None] * walker.velocities ** 2).sum()
    return float(2.0 * kinetic / (3 * len(walker.masses) * KB))
