"""The one place that prints for people: tables, ✓/✗ lines, progress bars (rich)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Collection, Iterator, Sequence

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .console import console, errors

__all__ = ["escape", "progress", "activity", "spinner", "print_table", "print_models", "print_targets",
           "print_parity", "print_build_summary", "print_verify", "report_unseen", "print_md", "print_bench",
           "print_selection", "print_label_report", "print_train_result"]


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def spinner() -> Progress:
    """A transient spinner with a count, drawn only on a terminal (a pipe or log gets nothing, no blank line)."""
    return Progress(console=console, transient=True, disable=not console.is_terminal)


@contextmanager
def activity(verb: str) -> Iterator[Callable[[str], None]]:
    """What a long verb is doing: a status line on a terminal; elsewhere (a pipe, a CI log) one printed line
    per new message, so that a log is never silent for minutes."""
    if console.is_terminal:
        with console.status(f"[bold]{verb}[/bold]: starting") as status:
            yield lambda message: status.update(f"[bold]{verb}[/bold] {escape(message)}")
        return
    last: list[str] = []

    def line(message: str) -> None:
        if last != [message]:
            last[:] = [message]
            console.print(f"{verb} {message}", style="dim", markup=False, soft_wrap=True)

    yield line


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], left: Collection[str] = (),
                droppable: Sequence[str] = ()) -> list[str]:
    """Print a table, leaving out `droppable` columns (in that order) while it is wider than the console;
    returns the columns left out."""
    dropped: list[str] = []
    for name in [None, *droppable]:
        if name is not None:
            dropped.append(name)
        keep = [k for k, column in enumerate(columns) if column not in dropped]
        table = Table(title=title)
        for k in keep:
            table.add_column(columns[k], justify="left" if columns[k] in left else "right")
        for row in rows:
            table.add_row(*[row[k] for k in keep])
        if console.measure(table, options=console.options.update_width(10_000)).maximum <= console.width:
            break
    console.print(table)
    return dropped


def print_models() -> None:
    """The preset architectures with their parameter counts and whether a checkpoint ships."""
    from ..checkpoint import preset_path
    from ..model import PRESET_CONFIGS, StudentModel

    table = Table(title="Student presets")
    for col in ("name", "hidden", "layers", "rbf", "cutoff", "data", "params", "shipped"):
        table.add_column(col, no_wrap=True, justify="left" if col in ("name", "data", "shipped") else "right")
    for name, config in PRESET_CONFIGS.items():
        table.add_row(name, str(config.hidden_dim), str(config.num_interactions), str(config.num_rbf),
                      f"{config.cutoff:g} Å", "metals" if config.periodic else "molecules",
                      f"{StudentModel(config).num_parameters():,}", "✓" if preset_path(name).is_file() else "✗")
    console.print(table)
    console.print("layers = interaction blocks, rbf = radial basis functions", style="dim", markup=False)


def print_targets(device: str | None) -> None:
    """Every registered target, whether it can build here, and why not."""
    from ..targets.base import registered

    table = Table(title="Targets")
    for col in ("target", "device", "precision", "here", "description"):
        table.add_column(col, no_wrap=col != "description")
    missing = []
    for name, target in registered().items():
        settings = target.settings(device)
        reason = target.availability(settings)
        table.add_row(name, settings.device, settings.precision, "✓" if reason is None else "✗",
                      escape(target.description))
        if reason is not None:
            missing.append(f"  ✗ {name}: {reason}")
    console.print(table)
    for line in missing:
        console.print(line, markup=False)


def print_parity(report: dict, title: str) -> None:
    """One ✓/✗ line per output with max abs and relative error and the tolerance."""
    console.print(f"[bold]{title}[/bold]: {report['structures']} structures in {report['batches']} batches")
    width = max((len(check["name"]) for check in report["checks"]), default=0)
    for check in report["checks"]:
        mark = "[green]✓[/green]" if check["passed"] else "[red]✗[/red]"
        nan = "  NaN!" if check["nan"] else ""
        console.print(f"  {mark} {check['name']:<{width}}  max abs {check['max_abs']:.3e}  rel RMSE {check['rel_rmse']:.3e}"
                      f"  (tol {check['tolerance']}){nan}")


def print_build_summary(results, failed: list[str]) -> None:
    table = Table(title="Build summary")
    for col in ("target", "device", "file", "size", "parity", "status", "s"):
        table.add_column(col, overflow="fold", justify="right" if col in ("size", "s") else "left")
    for r in results:
        size = r.artifact.stat().st_size
        table.add_row(r.target, r.manifest.device, _shown(r.artifact), f"{size / 1024:.0f} KiB",
                      "✓" if r.manifest.parity_passed else "✗", r.status, f"{r.seconds:.1f}")
    for name in failed:
        table.add_row(name, "", "", "", "✗", "failed", "")
    console.print(table)


def _shown(path: Path) -> str:
    """`path` relative to the working folder when it is inside it (shorter), else as it is."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def print_verify(report: dict) -> None:
    """Parity lines, the manifest's disagreements with the installed tolerances, and errors against labels."""
    print_parity(report["parity"], f"{report['target']} parity vs eager")
    for name, (recorded, installed) in report.get("manifest_disagrees", {}).items():
        console.print(f"  [yellow]note[/yellow] the manifest records {name} = {recorded}; this installation "
                      f"checks {installed}")
    if "labels_not_compared" in report:
        console.print(f"  vs labels: not compared ({escape(report['labels_not_compared'])})")
    for who, metrics in report.get("vs_labels", {}).items():
        console.print(f"  vs labels ({who}): energy MAE {1000 * metrics['energy_mae_per_atom']:.2f} meV/atom, "
                      f"force MAE {metrics['force_mae']:.4f} eV/Å, force RMSE {metrics['force_rmse']:.4f} eV/Å")


def report_unseen(caught) -> None:
    """Unseen-element warnings caught during a run, one line each on stderr (duplicates once)."""
    from ..errors import UnseenElementWarning

    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UnseenElementWarning)):
        errors.print(f"warning: {message}", markup=False, soft_wrap=True)


def print_md(result, thresholds: dict) -> list[str]:
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


BENCH_DROPPABLE = ("neighbours ms", "p99 ms", "atoms/structure", "atoms/s", "p90 ms")


def print_bench(result) -> None:
    """Notices, the header lines, the table, per-target summaries and warnings of a bench result."""
    from ..bench.report import header_lines, table_rows

    for notice in result.notices:
        console.print(f"[yellow]notice[/yellow] {escape(notice)}", soft_wrap=True)
    for line in header_lines(result.header):
        console.print(line, style="dim", markup=False, soft_wrap=True)
    columns, rows = table_rows(result)
    dropped = print_table(f"deploycc bench: {result.header.get('model')} on {result.header.get('device')}",
                          columns, rows, left=("target", "mode"), droppable=BENCH_DROPPABLE)
    if dropped:
        console.print(f"(left out at this width: {', '.join(dropped)}; --markdown and --json have every column)",
                      style="dim", markup=False)
    for summary in result.summaries:
        console.print(summary.line(), markup=False, soft_wrap=True)
    for warning in result.warnings:
        console.print(f"[yellow]warning[/yellow] {escape(warning)}", soft_wrap=True)


def print_selection(selection) -> None:
    from ..select import candidate_rows

    for note in selection.notes:
        console.print(note, markup=False, soft_wrap=True)
    metric = "median latency" if selection.metric == "median_ms" else "throughput (structures/s)"
    columns, rows = candidate_rows(selection)
    print_table(f"deploycc select: {selection.model}, batch {selection.batch_size}, {selection.atoms:g} atoms, "
                f"{selection.device} ({selection.mode}); ranked by {metric}", columns,
                [[escape(cell) for cell in row] for row in rows], left=("target", "verdict"),
                droppable=("atoms/structure", "p90 ms", "atoms/s"))


def print_label_report(report, out: Path, data) -> None:
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


def print_train_result(model: str, result) -> None:
    table = Table(title=f"{model} -> {result.checkpoint}")
    for col in ("split", "structures", "energy MAE (meV/atom)", "force MAE (eV/Å)", "force RMSE (eV/Å)"):
        table.add_column(col)
    rows = [("val", result.val), ("test", result.test)]
    if getattr(result, "test_md", None) is not None:  # online distillation: the test molecules in teacher MD
        rows.append(("test (teacher MD)", result.test_md))
    for name, m in rows:
        table.add_row(name, str(m.structures), f"{1000 * m.energy_mae_per_atom:.2f}", f"{m.force_mae:.4f}",
                      f"{m.force_rmse:.4f}")
    console.print(table)
    if hasattr(result, "frames_seen"):  # online distillation
        console.print(f"steps {result.steps}, {result.frames_seen} frames seen (each once), teacher "
                      f"{result.teacher_frames} frames in {result.teacher_seconds:.1f} s, {result.seconds / 60:.1f} min, "
                      f"sha256 {result.sha256[:16]}")
        return
    console.print(f"epochs {result.epochs_run}, {result.seconds / 60:.1f} min, sha256 {result.sha256[:16]}")
