"""What an MD validation run is asked to do (MdSettings) and what it measured (Series, Stats, Divergence,
MdResult with its checks)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact.layout import json_safe
from ..errors import UserInputError

MAX_TEMPERATURE = 10_000.0  # K: hotter, a validation run measures atomization, not the force field


@dataclass
class MdSettings:
    """Physics and bookkeeping of one validation run (times in fs unless named otherwise)."""

    temperature: float = 300.0  # K
    timestep_fs: float = 0.5
    nve_steps: int = 20_000  # 10 ps at 0.5 fs
    equilibrate_steps: int = 2_000  # 1 ps at 0.5 fs
    relax_fmax: float = 0.05  # eV/Angstrom
    relax_steps: int = 500
    relax_cell: bool = False  # periodic structures: relax the cell too (stress, FrechetCellFilter) before MD
    friction: float = 0.01  # Langevin friction, 1/fs
    seed: int = 0
    log_interval: int = 10  # steps between samples and trajectory frames
    skin: float = 0.0  # Verlet skin of the neighbour list (Å; 0 rebuilds it every step)
    max_temperature_factor: float = 10.0  # stop NVE early as unstable above this multiple of the target

    def check(self) -> None:
        """Refuse settings that cannot make a run (as user errors)."""
        for name in ("temperature", "timestep_fs", "friction", "relax_fmax"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise UserInputError(f"{name.replace('_', '-')} must be positive and finite, got {value}")
        if self.temperature > MAX_TEMPERATURE:
            raise UserInputError(f"temperature {self.temperature:g} K is outside the range of an MD validation "
                                 f"run: give at most {MAX_TEMPERATURE:g} K")
        for name in ("nve_steps", "log_interval"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.log_interval > self.nve_steps:
            raise UserInputError(f"log-interval {self.log_interval} is longer than the {self.nve_steps} NVE steps: "
                                 f"that leaves 1 energy sample and the drift fit needs at least 2; give a log "
                                 f"interval of at most {self.nve_steps} steps")
        if not self.skin >= 0:
            raise UserInputError(f"skin must be >= 0 Å, got {self.skin}")
        if self.equilibrate_steps < 0 or self.relax_steps < 0:
            raise UserInputError("equilibration and relaxation steps cannot be negative")


@dataclass
class Series:
    """NVE samples of one model every `log_interval` steps (energies in eV, positions in Angstrom)."""

    label: str
    time_ps: np.ndarray
    potential: np.ndarray
    kinetic: np.ndarray
    positions: np.ndarray  # [samples, atoms, 3]
    steps: int  # steps actually run
    wall_s: float
    stable: bool = True
    stopped: str | None = None  # why NVE stopped early (unstable), e.g. an atom lost all its neighbours

    @property
    def total(self) -> np.ndarray:
        return self.potential + self.kinetic


@dataclass
class Stats:
    """Energy conservation and temperature of one NVE run."""

    label: str
    drift_mev_atom_ps: float
    fluctuation_mev_atom: float
    mean_temperature: float
    max_temperature: float
    ms_per_step: float
    steps: int
    stable: bool
    stopped: str | None = None  # why the run stopped early (None: it ran every step)


@dataclass
class Divergence:
    """How far two NVE runs from the same start drift apart."""

    max_rmsd: float  # Angstrom
    final_rmsd: float
    max_potential_diff_mev_atom: float
    final_potential_diff_mev_atom: float
    ps_to_0p1_angstrom: float | None  # first sample with RMSD above 0.1 Angstrom (None: never)
    rmsd: list[float] = field(repr=False, default_factory=list)


@dataclass
class Check:
    name: str
    value: float
    limit: float
    passed: bool
    text: str


@dataclass
class MdResult:
    """Everything one `run_md` measured; `checks()` compares it with thresholds."""

    formula: str
    n_atoms: int
    dof: int
    settings: MdSettings
    relax: dict[str, Any]
    run: Series
    stats: Stats
    compare: Series | None = None
    compare_stats: Stats | None = None
    divergence: Divergence | None = None
    files: dict[str, str] = field(default_factory=dict)

    def checks(self, max_drift: float = 1.0, max_temperature_error: float = 0.30) -> list[Check]:
        """Drift, mean temperature and stability of the model under test (the first run)."""
        s, target = self.stats, self.settings.temperature
        error = abs(s.mean_temperature - target) / target
        drift = abs(s.drift_mev_atom_ps)
        samples = len(self.run.time_ps)
        drift_text = (f"|drift| {drift:.3f} meV/atom/ps (max {max_drift:g})" if math.isfinite(drift) else
                      f"|drift| not measured: {samples} energy sample{'s' if samples != 1 else ''}, the fit needs 2 "
                      f"or more" + ("" if s.stable else " (the run stopped early)"))
        stopped = s.stopped or f"T above {self.settings.max_temperature_factor:g}x target"
        return [
            Check("drift", drift, max_drift, bool(math.isfinite(drift) and drift <= max_drift), drift_text),
            Check("temperature", error, max_temperature_error, bool(error <= max_temperature_error),
                  f"mean NVE T {s.mean_temperature:.0f} K, {100 * error:.1f}% from {target:g} K "
                  f"(max {100 * max_temperature_error:g}%)"),
            Check("stable", float(s.steps), float(self.settings.nve_steps), s.stable,
                  f"{s.steps}/{self.settings.nve_steps} NVE steps" + ("" if s.stable else f" (stopped: {stopped})")),
        ]

    def to_dict(self, **thresholds: float) -> dict[str, Any]:
        out: dict[str, Any] = {"formula": self.formula, "atoms": self.n_atoms, "dof": self.dof,
                               "settings": asdict(self.settings), "relax": self.relax, "stats": asdict(self.stats),
                               "checks": [asdict(c) for c in self.checks(**thresholds)], "files": self.files,
                               "threads": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}}
        if self.compare_stats is not None and self.divergence is not None:
            out["compare_stats"] = asdict(self.compare_stats)
            out["divergence"] = {k: v for k, v in asdict(self.divergence).items() if k != "rmsd"}
        return json_safe(out)
