"""The `deploycc` command line: one function per verb; user errors become one line and an exit code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.markup import escape
from rich.table import Table

from .console import console, errors
from .errors import DeployccError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Compile compact ML force fields: build, verify, bench.")
data_app = typer.Typer(no_args_is_help=True, help="Make and import datasets (HDF5).")
app.add_typer(data_app, name="data")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


@app.command("models")
def models_cmd() -> None:
    """List the preset student architectures with their parameter counts."""
    from .checkpoint import preset_path
    from .model import PRESET_CONFIGS, StudentModel

    table = Table(title="Student presets")
    for col in ("name", "hidden", "interactions", "radial", "cutoff (Å)", "periodic", "parameters", "checkpoint"):
        table.add_column(col)
    for name, config in PRESET_CONFIGS.items():
        shipped = "shipped" if preset_path(name).is_file() else "not trained"
        table.add_row(name, str(config.hidden_dim), str(config.num_interactions), str(config.num_rbf),
                      f"{config.cutoff:g}", "yes" if config.periodic else "no",
                      f"{StudentModel(config).num_parameters():,}", shipped)
    console.print(table)


@data_app.command("generate")
def data_generate(
    out: Path = typer.Option(..., help="HDF5 file to write"),
    teacher: str = typer.Option("xtb", help="teacher: xtb, emt, chgnet, or module:factory"),
    smiles: Optional[Path] = typer.Option(None, help="SMILES file (default: the shipped drug-like list)"),
    rattles: int = typer.Option(16, help="rattled frames per molecule"),
    md_frames: int = typer.Option(6, help="teacher-MD frames per molecule (300-800 K)"),
    max_molecules: int = typer.Option(0, help="use only the first N molecules (0 = all)"),
    seed: int = typer.Option(0),
) -> None:
    """Label off-equilibrium frames of molecules with a teacher; split by molecule; write HDF5."""
    from .data.generate import SMILES_FILE, generate_molecules, read_smiles
    from .data.schema import write_h5
    from .data.teachers import get_teacher

    chosen = get_teacher(teacher)
    molecules = read_smiles(smiles or SMILES_FILE)
    if max_molecules > 0:
        molecules = molecules[:max_molecules]
    chosen.make_calculator()  # fail early (and clearly) if the teacher is not installed
    with _progress() as progress:
        task = progress.add_task(f"labelling with {chosen.name}", total=len(molecules))
        data, report = generate_molecules(molecules, chosen, rattles=rattles, md_frames=md_frames, seed=seed,
                                          on_molecule=lambda name: progress.advance(task))
    write_h5(data, out)
    _print_label_report(report, out, data)


@data_app.command("metals")
def data_metals(
    out: Path = typer.Option(..., help="HDF5 file to write"),
    teacher: str = typer.Option("emt", help="teacher: emt (offline, fast), chgnet, or module:factory"),
    bulk: int = typer.Option(3, help="bulk cells per element (fcc, bcc, hcp in turn)"),
    alloys: int = typer.Option(20, help="random binary fcc alloys"),
    vacancies: int = typer.Option(10, help="fcc cells with 1-3 vacancies"),
    slabs: int = typer.Option(12, help="fcc(111)/(100)/(110) slabs with vacuum (pbc in-plane)"),
    clusters: int = typer.Option(6, help="non-periodic nanoparticles"),
    rattles: int = typer.Option(6, help="rattled frames per system"),
    md_frames: int = typer.Option(14, help="teacher-MD frames per system (300-1500 K)"),
    seed: int = typer.Option(0),
) -> None:
    """Periodic metals (Al Cu Ag Au Ni Pd Pt: bulk, alloys, strain, vacancies, slabs, MD), 32-200 atoms."""
    from .data.metals import MetalsSettings, generate_metals, systems
    from .data.schema import write_h5
    from .data.teachers import get_teacher

    chosen = get_teacher(teacher)
    chosen.make_calculator()  # fail early (and clearly) if the teacher is not installed
    settings = MetalsSettings(bulk=bulk, alloys=alloys, vacancies=vacancies, slabs=slabs, clusters=clusters,
                              rattles=rattles, md_frames=md_frames, seed=seed)
    total = sum(1 for _ in systems(settings))
    with _progress() as progress:
        task = progress.add_task(f"labelling with {chosen.name}", total=total)
        data, report = generate_metals(chosen, settings, on_system=lambda name: progress.advance(task))
    write_h5(data, out)
    _print_label_report(report, out, data)


@data_app.command("import")
def data_import(
    source: Path = typer.Argument(..., help="any ASE-readable labelled file (extxyz, ASE database, ...)"),
    out: Path = typer.Option(..., help="HDF5 file to write"),
    seed: int = typer.Option(0, help="seed of the train/val/test split"),
) -> None:
    """Import labelled structures from an ASE-readable file into the HDF5 schema."""
    import numpy as np

    from .data.schema import read_structures, split_by_group, write_h5

    data = read_structures(source)
    if not data.has_labels:
        raise DeployccError(f"{source} carries no energy/forces labels; label it with `deploycc data generate`")
    data.group = np.arange(len(data)) if data.group is None else data.group
    data.splits = split_by_group(data.group, (0.8, 0.1, 0.1), seed)
    data.attrs.update({"teacher": "imported", "source": str(source), "generator": "deploycc data import"})
    write_h5(data, out)
    console.print(f"wrote {len(data)} structures to {out}")


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., help="HDF5 dataset with train/val/test splits"),
    model: str = typer.Option("tiny", help="architecture preset: original, tiny, ultra-tiny, metals-tiny (periodic)"),
    out: Path = typer.Option(..., help="checkpoint to write"),
    epochs: int = typer.Option(200),
    batch_size: int = typer.Option(16),
    lr: float = typer.Option(2e-3),
    energy_weight: float = typer.Option(10.0, help="weight of the energy-per-atom loss (eV/atom)^2"),
    force_weight: float = typer.Option(1.0, help="weight of the force loss (eV/A)^2"),
    angular_weight: float = typer.Option(0.0, help="weight of the 1 - cos(F, F_ref) term"),
    patience: int = typer.Option(30, help="early stopping: epochs without validation improvement"),
    max_minutes: float = typer.Option(0.0, help="wall-clock budget; the LR schedule follows it (0 = none)"),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    resume: bool = typer.Option(False, help="continue from the training state saved beside --out"),
) -> None:
    """Distil a student from the dataset's teacher labels and save a checkpoint."""
    from .model import preset_config
    from .train.loop import TrainSettings, train

    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, energy_weight=energy_weight,
                             force_weight=force_weight, angular_weight=angular_weight, patience=patience,
                             max_minutes=max_minutes, seed=seed, device=device)

    def report(record: dict) -> None:
        console.print(f"epoch {record['epoch']:4d}  loss {record['loss']:.4f}  val E {1000 * record['val_energy_mae']:.2f} meV/atom"
                      f"  val F rmse {record['val_force_rmse']:.4f} eV/Å  lr {record['lr']:.2e}  {record['minutes']:.1f} min")

    result = train(data, preset_config(model), out, settings, resume=resume, on_epoch=report)
    table = Table(title=f"{model} -> {result.checkpoint}")
    for col in ("split", "structures", "energy MAE (meV/atom)", "force MAE (eV/Å)", "force RMSE (eV/Å)"):
        table.add_column(col)
    for name, m in (("val", result.val), ("test", result.test)):
        table.add_row(name, str(m.structures), f"{1000 * m.energy_mae_per_atom:.2f}", f"{m.force_mae:.4f}",
                      f"{m.force_rmse:.4f}")
    console.print(table)
    console.print(f"epochs {result.epochs_run}, {result.seconds / 60:.1f} min, sha256 {result.sha256[:16]}")


def _target_names(spec: str) -> list[str]:
    from .targets.base import get_target, registered

    if spec == "all":
        return list(registered())
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        get_target(name)  # unknown names fail here, listing the valid ones
    return names


@app.command("targets")
def targets_cmd(device: Optional[str] = typer.Option(None, help="check availability for this device")) -> None:
    """List the registered targets and whether each can build here (with the reason when not)."""
    from .pipeline import resolve_settings
    from .targets.base import registered

    table = Table(title="Targets")
    for col in ("target", "device", "precision", "available", "description"):
        table.add_column(col)
    for name, target in registered().items():
        settings = resolve_settings(name, device)
        reason = target.availability(settings)
        table.add_row(name, settings.device, settings.precision, "✓" if reason is None else f"✗ {escape(reason)}",
                      escape(target.description))
    console.print(table)


def print_parity(report: dict, title: str) -> None:
    """One ✓/✗ line per output with max abs and relative error and the tolerance."""
    console.print(f"[bold]{title}[/bold]: {report['structures']} structures in {report['batches']} batches")
    for check in report["checks"]:
        mark = "[green]✓[/green]" if check["passed"] else "[red]✗[/red]"
        nan = "  NaN!" if check["nan"] else ""
        console.print(f"  {mark} {check['name']:<14} max abs {check['max_abs']:.3e}  rel RMSE {check['rel_rmse']:.3e}"
                      f"  (tol {check['tolerance']}){nan}")


@app.command("build")
def build_cmd(
    model: str = typer.Option("tiny", help="preset name (original, tiny, ultra-tiny) or checkpoint path"),
    target: str = typer.Option("all", help="target name, comma-separated names, or 'all'"),
    out: Optional[Path] = typer.Option(None, help="artifact root (default ./artifacts)"),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: the target file's device)"),
    calib: Optional[Path] = typer.Option(None, help="structures for the parity check (default calib/molecules.h5)"),
    force: bool = typer.Option(False, help="rebuild even when the cache is valid"),
) -> None:
    """Export MODEL for each target, reload it, check parity against eager, write artifact + manifest."""
    from .errors import MissingDependencyError, ParityError, UnsupportedModelError
    from .pipeline import build

    names = _target_names(target)
    results, failed = [], []
    for name in names:
        with console.status(f"[bold]{name}[/bold]: starting") as status:
            try:
                result = build(model, name, out, device, force, calib,
                               stage=lambda s, n=name: status.update(f"[bold]{n}[/bold]: {s}"))
            except KeyboardInterrupt:
                status.stop()
                errors.print(f"error: interrupted while building {name}; the previous artifact (if any) is unchanged",
                             markup=False, soft_wrap=True)
                raise typer.Exit(130) from None
            except (MissingDependencyError, UnsupportedModelError) as exc:
                if target != "all":
                    raise
                console.print(f"[yellow]skipped[/yellow] {name}: {escape(str(exc))}")
                continue
            except ParityError as exc:
                print_parity(exc.report.to_dict(), f"{name} parity")
                failed.append(name)
                errors.print(f"error: {exc}; the previous artifact (if any) is unchanged", soft_wrap=True)
                continue
        results.append(result)
        print_parity(result.parity, f"{name} parity ({result.status})")
    _print_build_summary(results, failed)
    if failed:
        raise typer.Exit(1)


def _print_build_summary(results, failed: list[str]) -> None:
    table = Table(title="Build summary")
    for col in ("target", "device", "file", "size", "parity", "status", "seconds"):
        table.add_column(col)
    for r in results:
        size = r.artifact.stat().st_size
        table.add_row(r.target, r.manifest.get("device", "?"), str(r.artifact), f"{size / 1024:.0f} KiB",
                      "✓" if r.parity.get("passed") else "✗", r.status, f"{r.seconds:.1f}")
    for name in failed:
        table.add_row(name, "", "", "", "✗", "failed", "")
    console.print(table)


@app.command("verify")
def verify_cmd(
    artifact: Path = typer.Argument(..., help="artifact folder (or file inside it)"),
    data: Optional[Path] = typer.Option(None, help="HDF5 / extxyz / ASE-readable file (default calib/)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the JSON report here"),
    device: Optional[str] = typer.Option(None, help="run the artifact on this device"),
    unseen_elements: str = typer.Option("warn", help="elements absent from the training data: warn, refuse, allow"),
) -> None:
    """Parity of a built artifact against eager (from its manifest's checkpoint); exit 1 on failure."""
    import json
    import warnings

    from .errors import UnseenElementWarning
    from .verify import verify

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnseenElementWarning)
        report = verify(artifact, data, device, unseen_elements)
    for warning in caught:
        if issubclass(warning.category, UnseenElementWarning):
            errors.print(f"warning: {warning.message}", markup=False, soft_wrap=True)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    print_parity(report["parity"], f"{report['target']} parity vs eager")
    for who, metrics in report.get("vs_labels", {}).items():
        console.print(f"  vs labels ({who}): energy MAE {1000 * metrics['energy_mae_per_atom']:.2f} meV/atom, "
                      f"force MAE {metrics['force_mae']:.4f} eV/Å, force RMSE {metrics['force_rmse']:.4f} eV/Å")
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if not report["parity"]["passed"]:
        errors.print(f"error: {artifact} failed parity", soft_wrap=True)
        raise typer.Exit(1)
    console.print("[green]verified[/green]")


@app.command("predict")
def predict_cmd(
    artifact: str = typer.Argument(..., help="artifact folder, checkpoint path or preset name"),
    structures: Path = typer.Option(..., help="structures to evaluate: extxyz / any ASE-readable file / deploycc HDF5"),
    out: Path = typer.Option(..., help="write the labelled structures here (extended XYZ, input order)"),
    device: Optional[str] = typer.Option(None, help="run on this device (default: the artifact's)"),
    unseen_elements: str = typer.Option("warn", help="elements absent from the training data: warn, refuse, allow"),
) -> None:
    """Energies, forces (and stress, from periodic artifacts) for every structure of a file: the screening run."""
    import warnings

    from rich.progress import Progress

    from .api import load
    from .errors import UnseenElementWarning
    from .predict import predict_file

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnseenElementWarning)
        predictor = load(artifact, device, unseen_elements)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("predict", total=None)
            report = predict_file(predictor, structures, out,
                                  on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UnseenElementWarning)):
        errors.print(f"warning: {message}", markup=False, soft_wrap=True)
    console.print(f"{report.structures} structures ({report.atoms} atoms) with {predictor.label}: "
                  f"{report.seconds:.2f} s in the model, {report.structures_per_second:,.0f} structures/s; "
                  f"energy, forces{', stress' if report.stress else ''} written to {report.out}",
                  markup=False, soft_wrap=True)


@app.command("md")
def md_cmd(
    artifact: str = typer.Argument(..., help="artifact folder, checkpoint path or preset name"),
    structure: Path = typer.Option(..., help="any ASE-readable structure file (its last frame)"),
    temperature: float = typer.Option(300.0, help="target temperature (K)"),
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
    log_interval: int = typer.Option(10, help="steps between energy samples and trajectory frames"),
    compare: Optional[str] = typer.Option(None, help="'eager' (the artifact's checkpoint) or another model: "
                                                     "rerun NVE from the same start, report divergence"),
    out: Optional[Path] = typer.Option(None, help="output folder (default artifacts/md/<structure>-<model>)"),
    max_drift: float = typer.Option(1.0, help="check: |energy drift| at most this (meV/atom/ps)"),
    max_temperature_error: float = typer.Option(0.30, help="check: mean NVE T within this fraction of target"),
    gate: bool = typer.Option(True, "--gate/--no-gate", help="exit 1 when a check fails"),
) -> None:
    """Relax, Langevin-equilibrate, then NVE MD through ASE: energy drift, temperature, ms/step; exit 1 on a
    failed check."""
    from .api import load
    from .errors import UserInputError
    from .md import MdSettings, eager_reference, read_structure, run_md, write_outputs
    from .paths import artifacts_root

    if not timestep_fs > 0 or not ps > 0 or not equilibrate_ps >= 0:
        raise UserInputError(f"--timestep-fs and --ps must be positive and --equilibrate-ps not negative, got "
                             f"{timestep_fs:g}, {ps:g}, {equilibrate_ps:g}")
    atoms = read_structure(structure)
    settings = MdSettings(temperature=temperature, timestep_fs=timestep_fs, seed=seed, friction=friction,
                          nve_steps=steps if steps is not None else round(1000 * ps / timestep_fs),
                          equilibrate_steps=round(1000 * equilibrate_ps / timestep_fs), relax_fmax=relax_fmax,
                          relax_steps=relax_steps, relax_cell=relax_cell, log_interval=log_interval)
    settings.check()
    predictor = load(artifact)
    other = None if compare is None else eager_reference(artifact) if compare == "eager" else load(compare)
    out = out or artifacts_root() / "md" / f"{structure.stem}-{predictor.label.replace('/', '-')}"
    with console.status("[bold]md[/bold]: relaxing") as status:
        result = run_md(predictor, atoms, settings, compare=other, out=out,
                        on_progress=lambda phase, done, total: status.update(
                            f"[bold]md[/bold] {escape(phase)}: step {done}/{total}"))
    thresholds = {"max_drift": max_drift, "max_temperature_error": max_temperature_error}
    write_outputs(result, out, **thresholds)
    failed = _print_md(result, thresholds)
    for name, path in result.files.items():
        console.print(f"wrote {path} ({name})", markup=False, soft_wrap=True)
    if failed and gate:
        errors.print(f"error: {result.run.label} failed {', '.join(failed)} in NVE MD", soft_wrap=True)
        raise typer.Exit(1)


def _print_md(result, thresholds: dict) -> list[str]:
    """The per-run table, the divergence line and one ✓/✗ line per check; returns the failed checks."""
    r, s = result.relax, result.settings
    cell = (f" (cell too: volume {100 * r['volume_change']:+.2f}%, max stress {r['max_stress_gpa']:.3f} GPa)"
            if r.get("cell") else "")
    console.print(f"[bold]{result.formula}[/bold] ({result.n_atoms} atoms, {result.dof} dof): relaxed in "
                  f"{r['steps']} BFGS steps to fmax {r['fmax']:.3f} eV/Å{'' if r['converged'] else ' (not converged)'}"
                  f"{cell}; {s.equilibrate_steps} Langevin steps at {s.temperature:g} K; NVE {s.timestep_fs:g} fs")
    table = Table(title="deploycc md: NVE (velocity Verlet)")
    for col in ("model", "steps", "ps", "drift (meV/atom/ps)", "fluct. (meV/atom)", "mean T (K)", "max T (K)",
                "ms/step"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for st in filter(None, (result.stats, result.compare_stats)):
        table.add_row(escape(st.label), str(st.steps), f"{st.steps * s.timestep_fs / 1000:g}",
                      f"{st.drift_mev_atom_ps:+.3f}", f"{st.fluctuation_mev_atom:.3f}", f"{st.mean_temperature:.0f}",
                      f"{st.max_temperature:.0f}", f"{st.ms_per_step:.2f}")
    console.print(table)
    d = result.divergence
    if d is not None:
        console.print(f"divergence vs {escape(result.compare.label)}: RMSD max {d.max_rmsd:.3g} Å, final "
                      f"{d.final_rmsd:.3g} Å; |ΔE_pot| max {d.max_potential_diff_mev_atom:.3g} meV/atom, final "
                      f"{d.final_potential_diff_mev_atom:.3g} meV/atom; RMSD > 0.1 Å "
                      + ("never" if d.ps_to_0p1_angstrom is None else f"from {d.ps_to_0p1_angstrom:g} ps"))
    checks = result.checks(**thresholds)
    for check in checks:
        console.print(f"  {'[green]✓[/green]' if check.passed else '[red]✗[/red]'} {check.name:<12} {check.text}")
    return [check.name for check in checks if not check.passed]


@app.command("bench")
def bench_cmd(
    model: str = typer.Option("tiny", help="preset name (original, tiny, ultra-tiny) or checkpoint path"),
    target: str = typer.Option("all", help="target name, comma-separated names, or 'all' (skips unavailable)"),
    batch_sizes: str = typer.Option("1,2,4,8,16,32,64,128,256", help="comma-separated batch sizes"),
    atoms: int = typer.Option(25, help="structures of about this many atoms (workload structures within ±3)"),
    structures: Optional[Path] = typer.Option(None, help="workload file (default calib/molecules.h5; "
                                              "calib/metals.h5 for periodic models)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    threads: int = typer.Option(2, help="CPU threads per target (torch, ONNX Runtime, OMP/MKL)"),
    out: Optional[Path] = typer.Option(None, help="artifact root (default ./artifacts)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the records as JSON here"),
    markdown: Optional[Path] = typer.Option(None, help="write the table as Markdown here"),
    plot: Optional[Path] = typer.Option(None, help="write latency/throughput plots (PNG) here"),
    min_iters: int = typer.Option(50, help="timed calls per batch size, at least"),
    min_seconds: float = typer.Option(1.0, help="timed seconds per batch size, at least"),
    warmup: int = typer.Option(10, help="untimed calls before timing each batch size"),
) -> None:
    """Latency, throughput and peak memory per target and batch size, each target in its own process."""
    from .bench import BenchConfig, header_lines, latest_path, plot as plot_bench, run_bench, table_rows, to_markdown
    from .errors import UserInputError

    try:
        sizes = [int(s) for s in batch_sizes.split(",") if s.strip()]
    except ValueError:
        raise UserInputError(f"--batch-sizes must be comma-separated integers, got '{batch_sizes}'") from None
    config = BenchConfig(model=model, targets=target, batch_sizes=sizes, atoms=atoms, device=device,
                         structures=structures,
                         threads=threads, out=out, min_iters=min_iters, min_seconds=min_seconds, warmup=warmup)
    with console.status("[bold]bench[/bold]: starting") as status:
        result = run_bench(config, on_event=lambda message: status.update(f"[bold]bench[/bold] {message}"))
    for notice in result.notices:
        console.print(f"[yellow]notice[/yellow] {notice}", soft_wrap=True)
    for line in header_lines(result.header):
        console.print(line, style="dim", markup=False, soft_wrap=True)
    columns, rows = table_rows(result)
    table = Table(title=f"deploycc bench: {result.header.get('model')} on {result.header.get('device')}")
    for col in columns:
        table.add_column(col, justify="left" if col in ("target", "mode") else "right")
    for row in rows:
        table.add_row(*row)
    if rows:
        _print_wide(table, 140)
    else:
        console.print("[yellow]nothing was measured[/yellow]")
    for summary in result.summaries:
        console.print(summary.line(), markup=False, soft_wrap=True)
    for warning in result.warnings:
        console.print(f"[yellow]warning[/yellow] {warning}", soft_wrap=True)
    if json_out is not None:
        result.write_json(json_out)
        console.print(f"wrote {json_out}")
    if markdown is not None:
        markdown.write_text(to_markdown(result))
        console.print(f"wrote {markdown}")
    if plot is not None:
        plot_bench(result, plot)
        console.print(f"wrote {plot}")
    if result.records:
        console.print(f"saved {latest_path(out, str(result.header['model']), device)} (read by `deploycc select`)",
                      markup=False, soft_wrap=True)


@app.command("select")
def select_cmd(
    model: str = typer.Option("tiny", help="preset name (original, tiny, ultra-tiny) or checkpoint path"),
    batch_size: int = typer.Option(..., help="structures per call"),
    atoms: Optional[int] = typer.Option(None, help="atoms per structure (default: the bench's workload)"),
    device: str = typer.Option("cpu", help="cpu or cuda: whose latest bench to read"),
    mode: str = typer.Option("host", help="host (CPU tensors in and out) or device (cuda only)"),
    out: Optional[Path] = typer.Option(None, help="artifact root (default ./artifacts)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the selection as JSON here"),
) -> None:
    """The fastest built artifact that passed parity at this batch size, from the latest bench."""
    from .select import NothingEligibleError, select_backend

    try:
        selection = select_backend(model, batch_size, atoms, device, out, mode)
    except NothingEligibleError as exc:
        _print_selection(exc.selection)
        raise
    _print_selection(selection)
    console.print(f"selected: {selection.chosen.target} — {selection.row()}", markup=False, soft_wrap=True)
    if json_out is not None:
        from .artifacts import write_json

        write_json(json_out, selection.to_dict())
        console.print(f"wrote {json_out}")


def _print_selection(selection) -> None:
    from .select import candidate_rows

    for note in selection.notes:
        console.print(note, markup=False, soft_wrap=True)
    metric = "median latency" if selection.metric == "median_ms" else "throughput (structures/s)"
    columns, rows = candidate_rows(selection)
    table = Table(title=f"deploycc select: {selection.model}, batch {selection.batch_size}, "
                        f"{selection.atoms:g} atoms, {selection.device} ({selection.mode}); ranked by {metric}")
    for col in columns:
        table.add_column(col, justify="left" if col in ("target", "verdict") else "right")
    for row in rows:
        table.add_row(*[escape(cell) for cell in row])
    _print_wide(table, 160)


def _print_wide(renderable, width: int) -> None:
    """Print at `width` columns when the output is not a terminal (a pipe or file has no width to fit)."""
    if console.is_terminal or console.width >= width:
        console.print(renderable)
        return
    from rich.segment import Segments

    lines = console.render_lines(renderable, console.options.update_width(width), pad=False, new_lines=True)
    console.print(Segments([segment for line in lines for segment in line]), crop=False)


def _print_label_report(report, out: Path, data) -> None:
    from ase.data import chemical_symbols

    table = Table(title=f"Dataset {out}")
    for col in ("molecules", "structures", "atoms", "elements", "skipped", "train/val/test", "time (s)"):
        table.add_column(col)
    elements = " ".join(chemical_symbols[z] for z in sorted(report.elements))
    splits = "/".join(str(len(data.splits.get(s, []))) for s in ("train", "val", "test"))
    table.add_row(str(report.molecules), str(report.structures), str(report.atoms), elements,
                  str(report.skipped), splits, f"{report.seconds:.1f}")
    console.print(table)
    for reason, count in report.skipped_reasons.items():
        console.print(f"  skipped {count}: {reason}")


def main() -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit; bugs keep their traceback."""
    try:
        app()
    except DeployccError as exc:
        errors.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
