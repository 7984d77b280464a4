"""The MD energy plot: total, potential and kinetic energy vs time, and total energy with its drift line.

Uses matplotlib's object API with the Agg canvas, so no GUI backend is touched and pyplot's state is left alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .results import MdResult


def plot_energies(result: "MdResult", path: Path) -> Path:
    """Left: E_tot, E_pot (both minus the initial E_tot) and E_kin in eV; right: E_tot in meV/atom with fit."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    figure = Figure(figsize=(11, 4.5), dpi=110)
    FigureCanvasAgg(figure)
    energies, total = figure.subplots(1, 2)
    run, n = result.run, result.n_atoms
    e0 = run.total[0]
    energies.plot(run.time_ps, run.total - e0, label="total", color="black", lw=1)
    energies.plot(run.time_ps, run.potential - e0, label="potential", lw=0.8)
    energies.plot(run.time_ps, run.kinetic, label="kinetic", lw=0.8)
    energies.set(xlabel="time (ps)", ylabel="energy (eV, relative to initial total)", title=f"NVE: {run.label}")
    energies.legend(fontsize=8)
    for series, style in ((run, "-"), (result.compare, "--")):
        if series is None:
            continue
        per_atom = 1000.0 * (series.total - series.total[0]) / n
        total.plot(series.time_ps, per_atom, style, lw=0.8, label=series.label)
        if len(series.time_ps) > 1:
            slope, offset = np.polyfit(series.time_ps, per_atom, 1)
            total.plot(series.time_ps, offset + slope * series.time_ps, ":", color="gray", lw=1)
    s = result.stats
    total.set(xlabel="time (ps)", ylabel="total energy − initial (meV/atom)",
              title=f"drift {s.drift_mev_atom_ps:.3f} meV/atom/ps, fluctuation {s.fluctuation_mev_atom:.3f} meV/atom")
    total.legend(fontsize=8)
    for axis in (energies, total):
        axis.grid(True, alpha=0.3)
    settings = result.settings
    figure.suptitle(f"deploycc md: {result.formula} ({n} atoms), {settings.timestep_fs:g} fs, "
                    f"{settings.temperature:g} K, mean NVE T {s.mean_temperature:.0f} K", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path
