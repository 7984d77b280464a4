"""The benchmark plot: latency (log-log) and throughput vs batch size, one line per target and mode.

Uses matplotlib's object API with the Agg canvas, so no GUI backend is touched and pyplot's global state is left
alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .driver import BenchResult


def plot_result(result: "BenchResult", path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(11, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    latency, throughput = figure.subplots(1, 2)
    curves: dict[str, list] = {}
    with_mode = len({r.mode for r in result.records}) > 1
    for r in result.records:
        label = f"{r.target} ({r.mode})" if with_mode else r.target
        curves.setdefault(label, []).append(r)
    for label, records in curves.items():
        records = sorted(records, key=lambda r: r.batch_size)
        batches = [r.batch_size for r in records]
        style = "--" if records[0].mode == "host" and with_mode else "-"
        line, = latency.plot(batches, [r.median_ms for r in records], style, marker="o", ms=4, label=label)
        latency.fill_between(batches, [r.median_ms for r in records], [r.p90_ms for r in records],
                             color=line.get_color(), alpha=0.15, linewidth=0)
        throughput.plot(batches, [r.structures_per_s for r in records], style, marker="o", ms=4,
                        color=line.get_color(), label=label)
    latency.set(xscale="log", yscale="log", xlabel="batch size (structures)", ylabel="latency per call (ms)",
                title="median latency (band: to p90)")
    throughput.set(xscale="log", yscale="log", xlabel="batch size (structures)", ylabel="structures / s",
                   title="throughput (from median)")
    batches = sorted({r.batch_size for r in result.records})
    for axis in (latency, throughput):
        if batches:
            axis.set_xticks(batches)
        axis.xaxis.set_major_formatter("{x:g}")
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.grid(True, which="both", alpha=0.3)
    if curves:
        throughput.legend(fontsize=8)
    header = result.header
    work = header.get("workload") or {}
    subtitle = f"{header.get('model')} on {header.get('gpu') or header.get('cpu')}, {header.get('device')}, " \
               f"{header.get('threads')} threads, ~{float(work.get('mean_atoms', 0)):.0f} atoms/structure"
    figure.suptitle(f"deploycc bench: {subtitle}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def plot_scaling(result, path: Path) -> Path:
    """µs per atom against atoms (log-log), one line per target and system family."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(7.5, 5), dpi=120)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    curves: dict[str, list] = {}
    for r in result.records:
        if not r.skipped:
            curves.setdefault(f"{r.target}, {r.system.split(':')[0]}", []).append(r)
    for label, records in curves.items():
        records = sorted(records, key=lambda r: r.atoms)
        axis.plot([r.atoms for r in records], [r.us_per_atom for r in records], marker="o", ms=4, label=label)
    axis.set(xscale="log", yscale="log", xlabel="atoms", ylabel="µs per atom (energy + forces)",
             title=f"deploycc scale: {result.header.get('model')}, {result.header.get('threads')} threads, "
                   f"{result.header.get('cpu')}")
    axis.title.set_fontsize(8)
    axis.grid(True, which="both", alpha=0.3)
    if curves:
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path
