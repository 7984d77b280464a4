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
from .outputs import check_outputs, storage_errors  # noqa: F401 (check_outputs re-exported)
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


def check_structure(atoms, path: Path | str | None = None) -> None:
    """Refuse a structure MD cannot run: a single atom has no dynamics once its momentum is zeroed."""
    if len(atoms) < 2:
        where = "the structure" if path is None else f"the structure in {path}"
        hint = " (repeat the periodic cell into a supercell)" if np.any(atoms.get_pbc()) else ""
        raise UserInputError(f"{where} has {len(atoms)} atom: MD needs at least 2{hint}")


def neighbour_counts(atoms, cutoff: float) -> np.ndarray:
    """How many atoms (periodic images included) lie within `cutoff` of each atom."""
    from ase.neighborlist import neighbor_list

    return np.bincount(neighbor_list("i", atoms, cutoff), minlength=len(atoms))


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
        zero_rotation(atoms)


def zero_rotation(atoms) -> None:
    """Subtract the rigid rotation that carries the angular momentum, keeping the kinetic energy (as ASE's
    ZeroRotation does); rotation about an axis with no moment of inertia (a linear molecule's own axis, a single
    atom) is left alone instead of divided by zero."""
    masses = atoms.get_masses()
    r = atoms.get_positions() - atoms.get_center_of_mass()
    v = atoms.get_velocities()
    kinetic = atoms.get_kinetic_energy()
    momentum = (masses[:, None] * np.cross(r, v)).sum(axis=0)
    inertia = (masses * (r ** 2).sum(axis=1)).sum() * np.eye(3) - np.einsum("i,ij,ik->jk", masses, r, r)
    moments, axes = np.linalg.eigh(inertia)
    keep = moments > 1e-8 * max(moments.max(), 1e-300)
    along = axes.T @ momentum
    omega = axes @ np.where(keep, along / np.where(keep, moments, 1.0), 0.0)
    atoms.set_velocities(v - np.cross(omega, r))
    after = atoms.get_kinetic_energy()
    if kinetic > 0 and after > 0:
        atoms.set_momenta(atoms.get_momenta() * np.sqrt(kinetic / after))


class _Unstable(Exception):
    pass


def _flown_apart(atoms, bonded: tuple[np.ndarray, float], when: str) -> list[str]:
    """Why the structure flew apart (an atom that had neighbours within the cutoff has none), or nothing."""
    had, cutoff = bonded
    lost = np.flatnonzero(had & (neighbour_counts(atoms, cutoff) == 0))
    if not len(lost):
        return []
    k = int(lost[0])
    others = f" and {len(lost) - 1} more" if len(lost) > 1 else ""
    return [f"atom {k} ({atoms[k].symbol}){others} lost all neighbours within the {cutoff:g} Å cutoff {when}: the "
            "structure flew apart"]


def nve(atoms, label: str, settings: MdSettings, dof: int, trajectory: Path | None = None,
        on_progress: Progress | None = None, bonded: tuple[np.ndarray, float] | None = None) -> Series:
    """Velocity Verlet for `nve_steps`, sampling energies and positions every `log_interval` steps.

    Stops early as unstable when the temperature passes `max_temperature_factor` x target, an energy is not
    finite, or (with `bonded`: which atoms had a neighbour within the cutoff at the start, and that cutoff) an
    atom that had neighbours has none left: the structure flew apart."""
    from ase import units
    from ase.io import Trajectory
    from ase.md.verlet import VelocityVerlet

    dyn = VelocityVerlet(atoms, settings.timestep_fs * units.fs, logfile=None)
    samples: list[tuple[float, float, float, np.ndarray]] = []
    limit = settings.max_temperature_factor * settings.temperature
    stopped: list[str] = []
    checking = [0.0]  # seconds spent on the neighbour check, kept out of the time per step

    def sample() -> None:
        kinetic, potential = atoms.get_kinetic_energy(), atoms.get_potential_energy()
        t = dyn.nsteps * settings.timestep_fs / 1000.0
        samples.append((t, potential, kinetic, atoms.get_positions()))
        if on_progress is not None:
            on_progress(label, dyn.nsteps, settings.nve_steps)
        if not (np.isfinite(kinetic) and np.isfinite(potential)):
            stopped.append(f"a non-finite energy at {t:g} ps")
        elif 2 * kinetic / (dof * units.kB) > limit:
            stopped.append(f"T above {settings.max_temperature_factor:g}x target at {t:g} ps")
        elif bonded is not None:
            tic = time.perf_counter()
            stopped.extend(_flown_apart(atoms, bonded, "by the start of NVE" if dyn.nsteps == 0 else f"by {t:g} ps"))
            checking[0] += time.perf_counter() - tic
        if stopped:
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
    except UserInputError as exc:  # the input passed these rules: the dynamics broke them (atoms collapsed)
        stable = False
        t = dyn.nsteps * settings.timestep_fs / 1000.0
        stopped.append(f"at {t:g} ps the model refused the structure the dynamics made ({exc})")
    finally:
        if writer is not None:
            writer.close()
    wall = time.perf_counter() - started - checking[0]
    if not samples:  # refused at the first step, before any sample
        samples.append((0.0, float("nan"), float("nan"), atoms.get_positions()))
    t, pot, kin, pos = (np.array(column) for column in zip(*samples))
    return Series(label, t, pot, kin, pos, int(dyn.nsteps), wall, stable, stopped[0] if stopped else None)


def stats_of(series: Series, n_atoms: int, dof: int) -> Stats:
    """Drift, fluctuation (std of total energy per atom), mean and max temperature, ms per step."""
    from ase import units

    per_atom = series.total / n_atoms
    temperature = 2 * series.kinetic / (dof * units.kB)
    return Stats(series.label, fit_drift(series.time_ps, per_atom), 1000.0 * float(np.std(per_atom)),
                 float(np.mean(temperature)), float(np.max(temperature)),
                 1000.0 * series.wall_s / max(series.steps, 1), series.steps, series.stable, series.stopped)


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
    same start. With `out`, writes `nve.traj` (and `compare.traj`) there, checking first that `write_outputs`
    can add `md.json` and `energy.png`."""
    settings = settings or MdSettings()
    settings.check()
    check_structure(atoms)
    if out is not None:
        out = check_outputs(out, compare=compare is not None)
    predictor = _predictor(predictor_or_source)
    if compare == "eager":
        if isinstance(predictor_or_source, Predictor):
            raise UserInputError("--compare eager needs the artifact's path, not a Predictor")
        compare = eager_reference(predictor_or_source)
    other = None if compare is None else _predictor(compare)
    atoms = atoms.copy()
    bonded = (neighbour_counts(atoms, predictor.cutoff) > 0, float(predictor.cutoff))  # the input's neighbours
    atoms.calc = _calculator(predictor, settings.skin)
    relaxed = relax(atoms, settings)
    equilibrate(atoms, settings, on_progress)
    start, dof, n = atoms.copy(), degrees_of_freedom(atoms), len(atoms)
    if out is not None:
        with storage_errors(out):
            out.mkdir(parents=True, exist_ok=True)
    with storage_errors(out):
        run = nve(atoms, predictor.label, settings, dof, out / "nve.traj" if out else None, on_progress, bonded)
    result = MdResult(atoms.get_chemical_formula(), n, dof, settings, relaxed, run, stats_of(run, n, dof))
    if other is not None:
        start.calc = _calculator(other, settings.skin)
        with storage_errors(out):
            result.compare = nve(start, other.label, settings, dof, out / "compare.traj" if out else None,
                                 on_progress, bonded)
        result.compare_stats = stats_of(result.compare, n, dof)
        result.divergence = divergence(run, result.compare, n)
    if out is not None:
        result.files = {"trajectory": str(out / "nve.traj")}
        if other is not None:
            result.files["compare_trajectory"] = str(out / "compare.traj")
    return result


def write_outputs(result: MdResult, out: Path, **thresholds: float) -> None:
    """The JSON summary and the energy plot into `out` (the trajectories are written during the run); a full or
    unwritable disk is a StorageError."""
    from ..artifact.layout import write_json
    from .plot import plot_energies

    out = Path(out)
    with storage_errors(out):
        out.mkdir(parents=True, exist_ok=True)
        result.files.update({"summary": str(out / "md.json"), "plot": str(out / "energy.png")})
        write_json(out / "md.json", result.to_dict(**thresholds))
        plot_energies(result, out / "energy.png")
