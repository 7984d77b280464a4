"""The MD validation run: relax (optionally the cell too), Langevin-equilibrate, then NVE velocity Verlet with a
deployed model via ASE.

Reports the energy drift (slope of a least-squares line through total energy per atom vs time, meV/atom/ps),
its fluctuation, the mean NVE temperature and the wall time per step; optionally reruns the same NVE start
with a second model (identical positions and velocities) and reports how far the trajectories diverge.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import UserInputError
from ..runtime.load import load, reference_predictor
from ..runtime.predictor import Predictor
from .results import Divergence, MdResult, MdSettings, Series, Stats

Progress = Callable[[str, int, int], None]  # (phase, steps done, steps total)


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

    from ..data.schema import existing_structure_file, unreadable

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
    return reference_predictor(source)


def _predictor(source: Predictor | str | os.PathLike) -> Predictor:
    return source if isinstance(source, Predictor) else load(source)


def _calculator(predictor: Predictor, skin: float = 0.0):
    from ..runtime.ase import DeployccCalculator

    return DeployccCalculator(predictor, skin=skin)


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
    from ..data.generate import thermalize

    rng = np.random.default_rng(settings.seed)
    thermalize(atoms, settings.temperature, rng)
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
    atoms.calc = _calculator(predictor, settings.skin)
    relaxed = relax(atoms, settings)
    equilibrate(atoms, settings, on_progress)
    start, dof, n = atoms.copy(), degrees_of_freedom(atoms), len(atoms)
    out = None if out is None else Path(out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    run = nve(atoms, predictor.label, settings, dof, out / "nve.traj" if out else None, on_progress)
    result = MdResult(atoms.get_chemical_formula(), n, dof, settings, relaxed, run, stats_of(run, n, dof))
    if other is not None:
        start.calc = _calculator(other, settings.skin)
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

    from .plot import plot_energies

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.files.update({"summary": str(out / "md.json"), "plot": str(out / "energy.png")})
    (out / "md.json").write_text(json.dumps(result.to_dict(**thresholds), indent=2) + "\n")
    plot_energies(result, out / "energy.png")
