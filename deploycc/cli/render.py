"""The one place that prints for people: tables, ✓/✗ lines, progress bars (rich)."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .console import console, errors

__all__ = ["escape", "progress", "print_models", "print_targets", "print_parity", "print_build_summary",
           "print_verify", "report_unseen", "print_md", "print_bench", "print_selection", "print_wide",
           "print_label_report", "print_train_result"]


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def print_models() -> None:
    """The preset architectures with their parameter counts and whether a checkpoint ships."""
    from ..checkpoint import preset_path
    from ..model import PRESET_CONFIGS, StudentModel

    table = Table(title="Student presets")
    for col in ("name", "hidden", "interactions", "radial", "cutoff (Å)", "trained on", "parameters", "checkpoint"):
        table.add_column(col)
    for name, config in PRESET_CONFIGS.items():
        shipped = "shipped" if preset_path(name).is_file() else "not trained"
        table.add_row(name, str(config.hidden_dim), str(config.num_interactions), str(config.num_rbf),
                      f"{config.cutoff:g}", "periodic metals" if config.periodic else "molecules",
                      f"{StudentModel(config).num_parameters():,}", shipped)
    console.print(table)


def print_targets(device: str | None) -> None:
    """Every registered target, whether it can build here, and why not."""
    from ..targets.base import registered

    table = Table(title="Targets")
    for col in ("target", "device", "precision", "available", "description"):
        table.add_column(col)
    for name, target in registered().items():
        settings = target.settings(device)
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


def print_build_summary(results, failed: list[str]) -> None:
    table = Table(title="Build summary")
    for col in ("target", "device", "file", "size", "parity", "status", "seconds"):
        table.add_column(col)
    for r in results:
        size = r.artifact.stat().st_size
        table.add_row(r.target, r.manifest.device, str(r.artifact), f"{size / 1024:.0f} KiB",
                      "✓" if r.manifest.parity_passed else "✗", r.status, f"{r.seconds:.1f}")
    for name in failed:
        table.add_row(name, "", "", "", "✗", "failed", "")
    console.print(table)


def print_verify(report: dict) -> None:
    """Parity lines, the manifest's disagreements with the installed tolerances, and errors against labels."""
    print_parity(report["parity"], f"{report['target']} parity vs eager")
    for name, (recorded, installed) in report.get("manifest_disagrees", {}).items():
        console.print(f"  [yellow]note[/yellow] the manifest records {name} = {recorded}; this installation "
                      f"checks {installed}")
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


def print_bench(result) -> None:
    """Notices, the header lines, the table, per-target summaries and warnings of a bench result."""
    from ..bench.report import header_lines, table_rows

    for notice in result.notices:
        console.print(f"[yellow]notice[/yellow] {escape(notice)}", soft_wrap=True)
    for line in header_lines(result.header):
        console.print(line, style="dim", markup=False, soft_wrap=True)
    columns, rows = table_rows(result)
    table = Table(title=f"deploycc bench: {result.header.get('model')} on {result.header.get('device')}")
    for col in columns:
        table.add_column(col, justify="left" if col in ("target", "mode") else "right")
    for row in rows:
        table.add_row(*row)
    print_wide(table, 150)
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
    table = Table(title=f"deploycc select: {selection.model}, batch {selection.batch_size}, "
                        f"{selection.atoms:g} atoms, {selection.device} ({selection.mode}); ranked by {metric}")
    for col in columns:
        table.add_column(col, justify="left" if col in ("target", "verdict") else "right")
    for row in rows:
        table.add_row(*[escape(cell) for cell in row])
    print_wide(table, 160)


def print_wide(renderable, width: int) -> None:
    """Print at `width` columns when the output is not a terminal (a pipe or file has no width to fit)."""
    if console.is_terminal or console.width >= width:
        console.print(renderable)
        return
    from rich.segment import Segments

    lines = console.render_lines(renderable, console.options.update_width(width), pad=False, new_lines=True)
    console.print(Segments([segment for line in lines for segment in line]), crop=False)


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
    for name, m in (("val", result.val), ("test", result.test)):
        table.add_row(name, str(m.structures), f"{1000 * m.energy_mae_per_atom:.2f}", f"{m.force_mae:.4f}",
                      f"{m.force_rmse:.4f}")
    console.print(table)
    console.print(f"epochs {result.epochs_run}, {result.seconds / 60:.1f} min, sha256 {result.sha256[:16]}")
