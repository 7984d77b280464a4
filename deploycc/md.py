"""The MD validation run: relax (optionally the cell too), Langevin-equilibrate, then NVE velocity Verlet with a
deployed model via ASE.

Reports the energy drift (slope of a least-squares line through total energy per atom vs time, meV/atom/ps),
its fluctuation, the mean NVE temperature and the wall time per step; optionally reruns the same NVE start
with a second model (identical positions and velocities) and reports how far the trajectories diverge.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .api import Predictor, load
from .errors import UserInputError

Progress = Callable[[str, int, int], None]  # (phase, steps done, steps total)


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
    max_temperature_factor: float = 10.0  # stop NVE early as unstable above this multiple of the target

    def check(self) -> None:
        """Refuse settings that cannot make a run (as user errors)."""
        for name in ("temperature", "timestep_fs", "friction", "relax_fmax"):
            if not getattr(self, name) > 0:
                raise UserInputError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("nve_steps", "log_interval"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
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
        return [
            Check("drift", abs(s.drift_mev_atom_ps), max_drift, abs(s.drift_mev_atom_ps) <= max_drift,
                  f"|drift| {abs(s.drift_mev_atom_ps):.3f} meV/atom/ps (max {max_drift:g})"),
            Check("temperature", error, max_temperature_error, bool(error <= max_temperature_error),
                  f"mean NVE T {s.mean_temperature:.0f} K, {100 * error:.1f}% from {target:g} K "
                  f"(max {100 * max_temperature_error:g}%)"),
            Check("stable", float(s.steps), float(self.settings.nve_steps), s.stable,
                  f"{s.steps}/{self.settings.nve_steps} NVE steps"
                  + ("" if s.stable else f" (stopped: T above {self.settings.max_temperature_factor:g}x target)")),
        ]

    def to_dict(self, **thresholds: float) -> dict[str, Any]:
        out: dict[str, Any] = {"formula": self.formula, "atoms": self.n_atoms, "dof": self.dof,
                               "settings": asdict(self.settings), "relax": self.relax, "stats": asdict(self.stats),
                               "checks": [asdict(c) for c in self.checks(**thresholds)], "files": self.files,
                               "threads": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}}
        if self.compare_stats is not None and self.divergence is not None:
            out["compare_stats"] = asdict(self.compare_stats)
            out["divergence"] = {k: v for k, v in asdict(self.divergence).items() if k != "rmsd"}
        return _json_safe(out)


def _json_safe(value: Any) -> Any:
    """NaN and infinities (a run that stopped at once) become null, so the summary is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value


def fit_drift(time_ps: np.ndarray, total_per_atom: np.ndarray) -> float:
    """Slope of the least-squares line through total energy per atom (eV) vs time (ps), in meV/atom/ps."""
    if len(time_ps) < 2:
        return float("nan")
    slope, _ = np.polyfit(np.asarray(time_ps, float), np.asarray(total_per_atom, float), 1)
    return 1000.0 * float(slope)


def degrees_of_freedom(atoms) -> int:
    """3N - 6 (3N - 5 if linear): NVE starts with zero linear and angular momentum, which it conserves.
    Periodic structures conserve linear momentum only: 3N - 3."""
    n = len(atoms)
    if np.any(atoms.get_pbc()):
        return max(3 * n - 3, 1)
    if n == 1:
        return 3
    inertia = np.sort(atoms.get_moments_of_inertia())
    linear = n == 2 or inertia[0] < 1e-3 * inertia[-1]
    return max(3 * n - (5 if linear else 6), 1)


def read_structure(path: Path):
    """The (last) structure of any ASE-readable file; missing or unreadable files are user errors."""
    import ase.io

    from .data.schema import existing_structure_file, unreadable

    path = existing_structure_file(path)
    try:
        atoms = ase.io.read(str(path))
    except Exception as exc:  # ASE raises many types for unreadable files
        raise unreadable(path, exc) from None
    if isinstance(atoms, list):
        atoms = atoms[-1] if atoms else None
    if atoms is None or len(atoms) == 0:
        raise UserInputError(f"{path} holds no atoms")
    return atoms


def eager_reference(source: str | os.PathLike) -> Predictor:
    """The eager model an artifact was built from (its reference checkpoint); checkpoints and presets as is."""
    from .artifacts import read_manifest
    from .pipeline import reference_checkpoint, resolve_settings
    from .targets.eager import EagerRunner

    path = Path(source)
    folder = path.parent if path.is_file() and (path.parent / "manifest.json").is_file() else path
    if not (folder / "manifest.json").is_file():
        return load(source, "cpu")
    manifest = read_manifest(folder)
    checkpoint = reference_checkpoint(folder, manifest)
    settings = resolve_settings("eager", "cpu")
    return Predictor(EagerRunner(checkpoint.model, "cpu"), settings.batch.max, 10**6, checkpoint.config.max_z,
                     f"{manifest['model']}/eager", elements=checkpoint.elements)


def _predictor(source: Predictor | str | os.PathLike) -> Predictor:
    return source if isinstance(source, Predictor) else load(source)


def _calculator(predictor: Predictor):
    from .ase import DeployccCalculator

    return DeployccCalculator(predictor)


def relax(atoms, settings: MdSettings) -> dict[str, Any]:
    """BFGS to `relax_fmax` (at most `relax_steps` steps), the cell too with `relax_cell` (periodic structures
    only: stress through FrechetCellFilter); returns steps, final max force, convergence and the volume change."""
    from ase.optimize import BFGS

    volume = atoms.get_volume() if atoms.pbc.any() else None
    cell_moves = settings.relax_cell and bool(atoms.pbc.any())
    if settings.relax_cell and not cell_moves:
        raise UserInputError("--relax-cell needs a periodic structure (pbc along at least one axis)")
    target = atoms
    if cell_moves:
        from ase.filters import FrechetCellFilter

        target = FrechetCellFilter(atoms)
    optimizer = BFGS(target, logfile=None)
    converged = bool(optimizer.run(fmax=settings.relax_fmax, steps=settings.relax_steps))
    fmax = float(np.sqrt((atoms.get_forces() ** 2).sum(axis=1)).max())
    out: dict[str, Any] = {"steps": int(optimizer.nsteps), "fmax": fmax, "converged": converged, "cell": cell_moves}
    if cell_moves:
        out["volume_change"] = float(atoms.get_volume() / volume - 1.0)
        from ase.units import GPa

        out["max_stress_gpa"] = float(np.abs(atoms.get_stress()).max() / GPa)
    return out


def equilibrate(atoms, settings: MdSettings, on_progress: Progress | None = None) -> None:
    """Maxwell-Boltzmann velocities (seeded), Langevin at the target, then zero linear and angular momentum."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md import velocitydistribution as vd

    rng = np.random.default_rng(settings.seed)
    if hasattr(vd, "thermalize_momenta"):  # ASE >= 3.29 (MaxwellBoltzmannDistribution is deprecated there)
        vd.thermalize_momenta(atoms, settings.temperature, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=settings.temperature, rng=rng)
    zero_momenta(atoms)
    dyn = Langevin(atoms, settings.timestep_fs * units.fs, temperature_K=settings.temperature,
                   friction=settings.friction / units.fs, fixcm=False, rng=rng, logfile=None)
    if on_progress is not None:
        total = settings.equilibrate_steps
        dyn.attach(lambda: on_progress("equilibrate", dyn.nsteps, total), interval=max(settings.log_interval, 1))
    dyn.run(settings.equilibrate_steps)
    zero_momenta(atoms)


def zero_momenta(atoms) -> None:
    """Remove total linear momentum, and angular momentum for isolated structures (periodic ones have none)."""
    from ase.md import velocitydistribution as vd

    vd.Stationary(atoms)
    if not np.any(atoms.get_pbc()):
        vd.ZeroRotation(atoms)


class _Unstable(Exception):
    pass


def nve(atoms, label: str, settings: MdSettings, dof: int, trajectory: Path | None = None,
        on_progress: Progress | None = None) -> Series:
    """Velocity Verlet for `nve_steps`, sampling energies and positions every `log_interval` steps."""
    from ase import units
    from ase.io import Trajectory
    from ase.md.verlet import VelocityVerlet

    dyn = VelocityVerlet(atoms, settings.timestep_fs * units.fs, logfile=None)
    samples: list[tuple[float, float, float, np.ndarray]] = []
    limit = settings.max_temperature_factor * settings.temperature

    def sample() -> None:
        kinetic = atoms.get_kinetic_energy()
        samples.append((dyn.nsteps * settings.timestep_fs / 1000.0, atoms.get_potential_energy(), kinetic,
                        atoms.get_positions()))
        if on_progress is not None:
            on_progress(label, dyn.nsteps, settings.nve_steps)
        if not np.isfinite(kinetic) or 2 * kinetic / (dof * units.kB) > limit:
            raise _Unstable

    interval = max(settings.log_interval, 1)
    writer = Trajectory(str(trajectory), "w", atoms) if trajectory is not None else None
    if writer is not None:
        dyn.attach(writer.write, interval=interval)
    dyn.attach(sample, interval=interval)
    stable, started = True, time.perf_counter()
    try:
        dyn.run(settings.nve_steps)
    except _Unstable:
        stable = False
    finally:
        if writer is not None:
            writer.close()
    wall = time.perf_counter() - started
    t, pot, kin, pos = (np.array(column) for column in zip(*samples))
    return Series(label, t, pot, kin, pos, int(dyn.nsteps), wall, stable)


def stats_of(series: Series, n_atoms: int, dof: int) -> Stats:
    """Drift, fluctuation (std of total energy per atom), mean and max temperature, ms per step."""
    from ase import units

    per_atom = series.total / n_atoms
    temperature = 2 * series.kinetic / (dof * units.kB)
    return Stats(series.label, fit_drift(series.time_ps, per_atom), 1000.0 * float(np.std(per_atom)),
                 float(np.mean(temperature)), float(np.max(temperature)),
                 1000.0 * series.wall_s / max(series.steps, 1), series.steps, series.stable)


def divergence(a: Series, b: Series, n_atoms: int) -> Divergence:
    """RMSD of positions (no alignment: both start from the same frame) and potential-energy difference."""
    k = min(len(a.time_ps), len(b.time_ps))
    rmsd = np.sqrt(((a.positions[:k] - b.positions[:k]) ** 2).sum(axis=2).mean(axis=1))
    diff = 1000.0 * np.abs(a.potential[:k] - b.potential[:k]) / n_atoms
    apart = np.flatnonzero(rmsd > 0.1)
    when = float(a.time_ps[apart[0]]) if len(apart) else None
    return Divergence(float(rmsd.max()), float(rmsd[-1]), float(diff.max()), float(diff[-1]), when, rmsd.tolist())


def run_md(predictor_or_source: Predictor | str | os.PathLike, atoms, settings: MdSettings | None = None, *,
           compare: Predictor | str | os.PathLike | None = None, out: Path | None = None,
           on_progress: Progress | None = None) -> MdResult:
    """Relax, equilibrate and run NVE with a model; `compare` ("eager" or any source) reruns NVE from the
    same start. With `out`, writes `nve.traj` (and `compare.traj`), `md.json` and `energy.png` there."""
    settings = settings or MdSettings()
    settings.check()
    predictor = _predictor(predictor_or_source)
    if compare == "eager":
        if isinstance(predictor_or_source, Predictor):
            raise UserInputError("--compare eager needs the artifact's path, not a Predictor")
        compare = eager_reference(predictor_or_source)
    other = None if compare is None else _predictor(compare)
    atoms = atoms.copy()
    atoms.calc = _calculator(predictor)
    relaxed = relax(atoms, settings)
    equilibrate(atoms, settings, on_progress)
    start, dof, n = atoms.copy(), degrees_of_freedom(atoms), len(atoms)
    out = None if out is None else Path(out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    run = nve(atoms, predictor.label, settings, dof, out / "nve.traj" if out else None, on_progress)
    result = MdResult(atoms.get_chemical_formula(), n, dof, settings, relaxed, run, stats_of(run, n, dof))
    if other is not None:
        start.calc = _calculator(other)
        result.compare = nve(start, other.label, settings, dof, out / "compare.traj" if out else None, on_progress)
        result.compare_stats = stats_of(result.compare, n, dof)
        result.divergence = divergence(run, result.compare, n)
    if out is not None:
        result.files = {"trajectory": str(out / "nve.traj")}
        if other is not None:
            result.files["compare_trajectory"] = str(out / "compare.traj")
    return result


def write_outputs(result: MdResult, out: Path, **thresholds: float) -> None:
    """The JSON summary and the energy plot into `out` (the trajectories are written during the run)."""
    import json

    from .md_plot import plot_energies

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.files.update({"summary": str(out / "md.json"), "plot": str(out / "energy.png")})
    (out / "md.json").write_text(json.dumps(result.to_dict(**thresholds), indent=2) + "\n")
    plot_energies(result, out / "energy.png")
