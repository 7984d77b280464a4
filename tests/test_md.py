"""`deploycc md`: the drift fit, a short NVE run and its files, compare mode, a planted bug, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys

import ase.build
import ase.io
import numpy as np
import pytest

from deploycc.api import Predictor, load
from deploycc.md import MdSettings, fit_drift, run_md, write_outputs

SHORT = dict(nve_steps=300, equilibrate_steps=100, log_interval=5, relax_steps=50)


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploycc", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture(scope="module")
def ethanol():
    return ase.build.molecule("CH3CH2OH")


def test_fit_drift_recovers_a_known_slope():
    rng = np.random.default_rng(0)
    t = np.linspace(0.0, 10.0, 2001)  # ps
    energy = -3.2 + 0.0025 * t + 1e-4 * rng.standard_normal(t.size)  # eV/atom: +2.5 meV/atom/ps, noisy
    assert fit_drift(t, energy) == pytest.approx(2.5, abs=0.01)
    assert fit_drift(t, np.full_like(t, 7.0)) == pytest.approx(0.0, abs=1e-9)  # offset is not drift
    assert fit_drift(t, -1e-3 * t) == pytest.approx(-1.0, rel=1e-9)


def test_short_run_reports_finite_drift_and_writes_files(ethanol, tmp_path):
    settings = MdSettings(**SHORT)
    result = run_md("ultra-tiny", ethanol, settings, out=tmp_path)
    write_outputs(result, tmp_path)
    stats = result.stats
    assert np.isfinite(stats.drift_mev_atom_ps) and abs(stats.drift_mev_atom_ps) < 1.0
    assert 0 < stats.fluctuation_mev_atom < 1.0 and stats.ms_per_step > 0 and stats.steps == 300
    assert 100 < stats.mean_temperature < 600
    assert {c.name: c.passed for c in result.checks()}["drift"]
    frames = ase.io.read(tmp_path / "nve.traj", index=":")
    assert len(frames) == 300 // 5 + 1 and frames[-1].get_momenta().any()
    assert (tmp_path / "energy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "md.json").read_text())
    assert summary["stats"]["drift_mev_atom_ps"] == pytest.approx(stats.drift_mev_atom_ps)
    assert summary["atoms"] == 9 and summary["dof"] == 21


def test_compare_with_itself_has_zero_divergence(ethanol):
    result = run_md("ultra-tiny", ethanol, MdSettings(**{**SHORT, "nve_steps": 150}), compare="eager")
    d = result.divergence
    assert d is not None and result.compare_stats is not None
    assert d.max_rmsd == 0.0 and d.max_potential_diff_mev_atom == 0.0 and d.ps_to_0p1_angstrom is None
    assert result.compare_stats.drift_mev_atom_ps == result.stats.drift_mev_atom_ps
    assert result.run.positions[-1].std() > 0 and np.ptp(result.run.potential) > 0  # the atoms did move


def test_compare_with_another_model_diverges(ethanol):
    result = run_md("ultra-tiny", ethanol, MdSettings(**{**SHORT, "nve_steps": 150}), compare="tiny")
    assert result.divergence.max_rmsd > 1e-3 and result.divergence.final_rmsd > 0


class NoisyForces(Predictor):
    """A planted bug: forces carry random noise (not the gradient of the energy), so NVE heats up."""

    def __init__(self, inner: Predictor, scale: float) -> None:
        self.__dict__.update(inner.__dict__)
        self.scale, self.rng = scale, np.random.default_rng(0)

    def predict(self, atoms_list):
        energies, forces = super().predict(atoms_list)
        return energies, [f + self.scale * self.rng.standard_normal(f.shape) for f in forces]


def test_planted_force_bug_fails_the_drift_check(ethanol):
    result = run_md(NoisyForces(load("ultra-tiny"), 0.3), ethanol, MdSettings(**{**SHORT, "relax_steps": 20}))
    checks = {c.name: c for c in result.checks()}
    assert abs(result.stats.drift_mev_atom_ps) > 20 and not checks["drift"].passed


@pytest.mark.parametrize("content, extra, fragment", [
    (None, [], "bad.xyz does not exist"),
    ("not a structure\n", [], "cannot read"),
    ("1\n\nH 0 0 0\n", ["--timestep-fs", "0"], "--timestep-fs"),
])
def test_bad_input_is_one_line_exit_65(content, extra, fragment, tmp_path):
    path = tmp_path / "bad.xyz"
    if content is not None:
        path.write_text(content)
    result = run_cli("md", "ultra-tiny", "--structure", str(path), *extra, cwd=tmp_path)
    assert result.returncode == 65, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_gate_exits_1_on_a_failed_check(ethanol, tmp_path):
    ase.io.write(tmp_path / "ethanol.xyz", ethanol)
    result = run_cli("md", "ultra-tiny", "--structure", str(tmp_path / "ethanol.xyz"), "--steps", "60",
                     "--equilibrate-ps", "0.02", "--log-interval", "5", "--max-temperature-error", "0",
                     "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "✓ drift" in result.stdout and "✗ temperature" in result.stdout
    assert result.stderr.strip().startswith("error: ") and "temperature" in result.stderr
    assert (tmp_path / "out" / "md.json").is_file() and (tmp_path / "out" / "nve.traj").is_file()


def test_periodic_structures_keep_3n_minus_3_degrees_of_freedom():
    from ase.build import bulk

    from deploycc.md import degrees_of_freedom

    cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    assert degrees_of_freedom(cell) == 3 * 32 - 3
    cluster = cell.copy()
    cluster.pbc = False
    assert degrees_of_freedom(cluster) == 3 * 32 - 6


def test_relax_cell_reaches_zero_pressure_before_md(tmp_path):
    """--relax-cell: a strained Cu cell relaxes its volume by stress (metals-tiny, distilled from EMT) before MD."""
    atoms = ase.build.bulk("Cu", "fcc", a=3.70, cubic=True).repeat((2, 2, 2))
    settings = MdSettings(**{**SHORT, "nve_steps": 40, "equilibrate_steps": 10, "relax_cell": True,
                             "timestep_fs": 2.0, "relax_fmax": 0.01})
    result = run_md("metals-tiny", atoms, settings)
    relaxed = result.relax
    assert relaxed["cell"] and relaxed["converged"]
    assert relaxed["volume_change"] < -0.03  # a = 3.70 -> ~3.58: about -9% volume
    assert relaxed["max_stress_gpa"] < 0.1


def test_relax_cell_refuses_a_molecule(ethanol):
    from deploycc.errors import UserInputError

    with pytest.raises(UserInputError, match="periodic structure"):
        run_md("ultra-tiny", ethanol, MdSettings(**{**SHORT, "relax_cell": True}))
