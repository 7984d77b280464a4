"""Verbs that run artifacts: `predict` (screen a file) and `md` (validation dynamics)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import typer

from ..errors import UnseenElementWarning, UserInputError
from .app import ARTIFACT_HELP, app
from .console import console, errors
from .render import escape, print_md, report_unseen, spinner


@app.command("predict")
def predict_cmd(
    artifact: str = typer.Argument(..., help=ARTIFACT_HELP),
    structures: Path = typer.Option(..., help="structures to evaluate: extxyz / any ASE-readable file / deploycc HDF5"),
    out: Path = typer.Option(..., help="write the labelled structures here (extended XYZ, input order)"),
    device: Optional[str] = typer.Option(None, help="run on this device (default: the artifact's)"),
    unseen_elements: str = typer.Option("warn", help="elements absent from the training data: warn, refuse, allow"),
    cluster: Optional[str] = typer.Option(None, help="evaluate on Dask workers: local:N, or tcp://HOST:PORT of a "
                                                     "running scheduler (workers must read the same files)"),
    chunk_size: Optional[int] = typer.Option(None, help="structures per chunk (one task each on a cluster; "
                                                        "default 512)"),
) -> None:
    """Energies, forces (and stress, for periodic structures) for every structure of a file: the screening run."""
    from ..runtime.cluster import parse_cluster
    from ..runtime.load import load
    from ..runtime.predict import Distributed, check_destination, predict_file

    check_destination(out, structures)
    if chunk_size is not None and chunk_size < 1:
        raise UserInputError(f"--chunk-size must be at least 1, got {chunk_size}")
    source = str(Path(artifact).resolve()) if Path(artifact).exists() else artifact  # as the workers see it
    distributed = None if cluster is None else Distributed(parse_cluster(cluster), source, device, unseen_elements)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnseenElementWarning)
        predictor = load(artifact, device, unseen_elements)
        with spinner() as bar:
            task = bar.add_task("predict", total=None)
            report = predict_file(predictor, structures, out,
                                  on_progress=lambda done, total: bar.update(task, completed=done, total=total),
                                  chunk_size=chunk_size, distributed=distributed)
    report_unseen(caught)
    console.print(f"{report.structures} structures ({report.atoms} atoms) with {predictor.label}: "
                  f"{report.seconds:.2f} s evaluating, {report.structures_per_second:,.0f} structures/s; "
                  f"energy, forces{', stress' if report.stress else ''} written to {report.out}",
                  markup=False, soft_wrap=True)


def _check_md_lengths(timestep_fs: float, ps: float, equilibrate_ps: float, max_drift: float,
                      max_temperature_error: float) -> None:
    import math

    if not (0 < timestep_fs < math.inf and 0 < ps < math.inf and 0 <= equilibrate_ps < math.inf):
        raise UserInputError(f"--timestep-fs and --ps must be positive and --equilibrate-ps not negative, got "
                             f"{timestep_fs:g}, {ps:g}, {equilibrate_ps:g}")
    for flag, value in (("--max-drift", max_drift), ("--max-temperature-error", max_temperature_error)):
        if not 0 <= value < math.inf:
            raise UserInputError(f"{flag} must be a finite number >= 0, got {value:g}")


@app.command("md")
def md_cmd(
    artifact: str = typer.Argument(..., help=ARTIFACT_HELP),
    structure: Path = typer.Option(..., help="any ASE-readable structure file (its last frame)"),
    temperature: float = typer.Option(300.0, help="target temperature (K, above 0 and at most 10000)"),
    timestep_fs: float = typer.Option(0.5, help="time step (fs)"),
    ps: float = typer.Option(10.0, help="NVE length (ps)"),
    steps: Optional[int] = typer.Option(None, help="NVE length in steps (overrides --ps)"),
    equilibrate_ps: float = typer.Option(1.0, help="Langevin equilibration before NVE (ps)"),
    relax_fmax: float = typer.Option(0.05, help="BFGS relaxation to this max force (eV/Å)"),
    relax_steps: int = typer.Option(500, help="at most this many relaxation steps"),
    relax_cell: bool = typer.Option(False, "--relax-cell/--fixed-cell",
                                    help="periodic structures: relax the cell too, by stress (zero pressure)"),
    friction: float = typer.Option(0.01, help="Langevin friction (1/fs)"),
    seed: int = typer.Option(0, help="seed of the initial velocities and the thermostat"),
    log_interval: int = typer.Option(10, help="steps between energy samples and trajectory frames "
                                              "(at most the NVE steps)"),
    skin: float = typer.Option(0.0, help="Verlet skin of the neighbour list (Å): rebuilt after skin/2 of motion"),
    compare: Optional[str] = typer.Option(None, help="'eager' (the artifact's checkpoint) or another model: "
                                                     "rerun NVE from the same start, report divergence"),
    out: Optional[Path] = typer.Option(None, help="output folder (default artifacts/md/<structure>-<model>)"),
    max_drift: float = typer.Option(1.0, help="check: |energy drift| at most this (meV/atom/ps)"),
    max_temperature_error: float = typer.Option(0.30, help="check: mean NVE T within this fraction of target"),
    gate: bool = typer.Option(True, "--gate/--no-gate", help="exit 1 when a check fails"),
) -> None:
    """Relax, Langevin-equilibrate, then NVE MD via ASE: energy drift, T, ms/step; exit 1 on a failed check."""
    from ..md import MdSettings, check_outputs, check_structure, eager_reference, read_structure, run_md, write_outputs
    from ..paths import artifacts_root
    from ..runtime.load import load

    _check_md_lengths(timestep_fs, ps, equilibrate_ps, max_drift, max_temperature_error)
    settings = MdSettings(temperature=temperature, timestep_fs=timestep_fs, seed=seed, friction=friction,
                          nve_steps=steps if steps is not None else round(1000 * ps / timestep_fs),
                          equilibrate_steps=round(1000 * equilibrate_ps / timestep_fs), relax_fmax=relax_fmax,
                          relax_steps=relax_steps, relax_cell=relax_cell, log_interval=log_interval, skin=skin)
    settings.check()
    atoms = read_structure(structure)
    check_structure(atoms, structure)
    if out is not None:  # before loading anything; the default folder is named after the model
        check_outputs(out, structure, compare=compare is not None)
    predictor = load(artifact)
    other = None if compare is None else eager_reference(artifact) if compare == "eager" else load(compare)
    out = out or artifacts_root() / "md" / f"{structure.stem}-{predictor.label.replace('/', '-')}"
    check_outputs(out, structure, compare=other is not None)
    with console.status("[bold]md[/bold]: relaxing") as status:
        result = run_md(predictor, atoms, settings, compare=other, out=out,
                        on_progress=lambda phase, done, total: status.update(
                            f"[bold]md[/bold] {escape(phase)}: step {done}/{total}"))
    thresholds = {"max_drift": max_drift, "max_temperature_error": max_temperature_error}
    write_outputs(result, out, **thresholds)
    failed = print_md(result, thresholds)
    for name, path in result.files.items():
        console.print(f"wrote {path} ({name})", markup=False, soft_wrap=True)
    if failed and gate:
        errors.print(f"error: {result.run.label} failed {', '.join(failed)} in NVE MD", soft_wrap=True)
        raise typer.Exit(1)
