"""`deploycc md`: the drift fit, a short NVE run and its files, compare mode, a planted bug, periodic cells,
settings and CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys

import ase.build
import ase.io
import ase.units
import numpy as np
import pytest

from deploycc.errors import UserInputError
from deploycc.md import MdSettings, degrees_of_freedom, fit_drift, read_structure, run_md, write_outputs
from deploycc.runtime.load import load
from deploycc.runtime.predictor import Predictor
from deploycc.targets.base import Prediction

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
    assert np.isnan(fit_drift(t[:1], energy[:1]))  # one sample: no slope


def test_short_run_reports_finite_drift_and_writes_files(ethanol, tmp_path):
    settings = MdSettings(**SHORT)
    result = run_md("ultra-tiny", ethanol, settings, out=tmp_path)
    write_outputs(result, tmp_path)
    stats = result.stats
    assert np.isfinite(stats.drift_mev_atom_ps) and abs(stats.drift_mev_atom_ps) < 1.0
    assert 0 < stats.fluctuation_mev_atom < 1.0 and stats.ms_per_step > 0 and stats.steps == 300
    assert 100 < stats.mean_temperature < 600 and stats.stable
    assert {c.name: c.passed for c in result.checks()}["drift"]
    assert result.relax["steps"] <= 50 and np.isfinite(result.relax["fmax"]) and not result.relax["cell"]
    frames = ase.io.read(tmp_path / "nve.traj", index=":")
    assert len(frames) == 300 // 5 + 1 and frames[-1].get_momenta().any()
    assert len(result.run.time_ps) == 300 // 5 + 1 and result.run.positions.shape == (61, 9, 3)
    assert (tmp_path / "energy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "md.json").read_text())
    assert summary["stats"]["drift_mev_atom_ps"] == pytest.approx(stats.drift_mev_atom_ps)
    assert summary["atoms"] == 9 and summary["dof"] == 21 and summary["formula"] == "C2H6O"
    assert [c["name"] for c in summary["checks"]] == ["drift", "temperature", "stable"]
    assert set(summary["files"]) == {"trajectory", "summary", "plot"}


def test_compare_with_itself_has_zero_divergence(ethanol):
    result = run_md("ultra-tiny", ethanol, MdSettings(**{**SHORT, "nve_steps": 150}), compare="eager")
    d = result.divergence
    assert d is not None and result.compare_stats is not None
    assert d.max_rmsd == 0.0 and d.max_potential_diff_mev_atom == 0.0 and d.ps_to_0p1_angstrom is None
    assert result.compare_stats.drift_mev_atom_ps == result.stats.drift_mev_atom_ps
    assert result.run.positions[-1].std() > 0 and np.ptp(result.run.potential) > 0  # the atoms did move
    assert "divergence" in result.to_dict() and "rmsd" not in result.to_dict()["divergence"]


def test_compare_with_another_model_diverges(ethanol):
    result = run_md("ultra-tiny", ethanol, MdSettings(**{**SHORT, "nve_steps": 150}), compare="tiny")
    assert result.divergence.max_rmsd > 1e-3 and result.divergence.final_rmsd > 0
    assert len(result.divergence.rmsd) == len(result.run.time_ps)


def test_compare_eager_needs_a_path_not_a_predictor(ethanol):
    with pytest.raises(UserInputError, match="needs the artifact's path"):
        run_md(load("ultra-tiny"), ethanol, MdSettings(**SHORT), compare="eager")


class NoisyForces(Predictor):
    """A planted bug: forces carry random noise (not the gradient of the energy), so NVE heats up."""

    def __init__(self, inner: Predictor, scale: float) -> None:
        self.__dict__.update(inner.__dict__)
        self.scale, self.rng = scale, np.random.default_rng(0)

    def run(self, batch, indices=None) -> Prediction:
        result = super().run(batch, indices)
        noisy = result.forces + self.scale * self.rng.standard_normal(result.forces.shape)
        return Prediction(result.energies, noisy, result.virials, result.offsets)


def test_planted_force_bug_fails_the_drift_check(ethanol):
    result = run_md(NoisyForces(load("ultra-tiny"), 0.3), ethanol, MdSettings(**{**SHORT, "relax_steps": 20}))
    checks = {c.name: c for c in result.checks()}
    assert abs(result.stats.drift_mev_atom_ps) > 20 and not checks["drift"].passed


def test_periodic_structures_keep_3n_minus_3_degrees_of_freedom():
    cell = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    assert degrees_of_freedom(cell) == 3 * 32 - 3
    cluster = cell.copy()
    cluster.pbc = False
    assert degrees_of_freedom(cluster) == 3 * 32 - 6
    assert degrees_of_freedom(ase.build.molecule("CO2")) == 3 * 3 - 5  # linear
    assert degrees_of_freedom(ase.Atoms("H")) == 3


def test_nve_in_a_small_periodic_cell_conserves_energy():
    """A cell narrower than twice the cutoff (image slots) runs NVE like a molecule does."""
    atoms = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True)  # 4 atoms, 3.61 Å < 2 x 5 Å cutoff
    atoms.positions += np.random.default_rng(0).normal(0.0, 0.05, atoms.positions.shape)
    settings = MdSettings(**{**SHORT, "nve_steps": 200, "equilibrate_steps": 50, "timestep_fs": 1.0})
    result = run_md("metals-tiny", atoms, settings)
    assert result.dof == 9 and result.stats.stable and result.stats.steps == 200
    assert abs(result.stats.drift_mev_atom_ps) < 1.0 and result.stats.mean_temperature > 50
    assert np.ptp(result.run.potential) > 0


def test_relax_cell_reaches_zero_pressure_before_md():
    """--relax-cell: a strained Cu cell relaxes its volume by stress (metals-tiny, distilled from EMT) before MD."""
    atoms = ase.build.bulk("Cu", "fcc", a=3.70, cubic=True).repeat((2, 2, 2))
    settings = MdSettings(**{**SHORT, "nve_steps": 40, "equilibrate_steps": 10, "relax_cell": True,
                             "timestep_fs": 2.0, "relax_fmax": 0.01})
    result = run_md("metals-tiny", atoms, settings)
    relaxed = result.relax
    assert relaxed["cell"] and relaxed["converged"]
    assert relaxed["volume_change"] < -0.03  # a = 3.70 -> ~3.58: about -9% volume
    # FrechetCellFilter's cell "forces" are virial / N, so converging to fmax bounds the stress by fmax * N / V
    volume = atoms.get_volume() * (1.0 + relaxed["volume_change"])
    bound_gpa = settings.relax_fmax * len(atoms) / volume / ase.units.GPa
    assert 0.05 < bound_gpa < 0.2 and relaxed["max_stress_gpa"] < bound_gpa


def test_relax_cell_refuses_a_molecule(ethanol):
    with pytest.raises(UserInputError, match="periodic structure"):
        run_md("ultra-tiny", ethanol, MdSettings(**{**SHORT, "relax_cell": True}))


@pytest.mark.parametrize("change, fragment", [
    ({"temperature": 0.0}, "temperature must be positive"), ({"timestep_fs": -0.5}, "timestep-fs"),
    ({"friction": float("nan")}, "friction"), ({"relax_fmax": 0.0}, "relax-fmax"),
    ({"nve_steps": 0}, "nve-steps must be at least 1"), ({"log_interval": 0}, "log-interval"),
    ({"equilibrate_steps": -1}, "cannot be negative"), ({"relax_steps": -1}, "cannot be negative"),
])
def test_settings_outside_their_domain_are_one_line_user_errors(ethanol, change, fragment):
    MdSettings(**SHORT).check()
    with pytest.raises(UserInputError) as caught:
        run_md("ultra-tiny", ethanol, MdSettings(**{**SHORT, **change}))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_read_structure_takes_the_last_frame_and_refuses_bad_files(tmp_path, ethanol):
    water = ase.build.molecule("H2O")
    ase.io.write(tmp_path / "two.xyz", [ethanol, water])
    assert read_structure(tmp_path / "two.xyz").get_chemical_formula() == "H2O"
    with pytest.raises(UserInputError, match="does not exist"):
        read_structure(tmp_path / "missing.xyz")
    (tmp_path / "junk.xyz").write_text("not a structure\n")
    with pytest.raises(UserInputError, match="cannot read"):
        read_structure(tmp_path / "junk.xyz")


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


def test_a_verlet_skin_reuses_the_list_and_keeps_the_trajectory(ethanol, monkeypatch):
    """NVE with a 0.5 Å skin rebuilds the neighbour list rarely, yet follows the same trajectory as a list
    rebuilt every step (the extra slots beyond the cutoff add exactly zero)."""
    import deploycc.runtime.neighbours as neighbours

    builds = []
    real = neighbours.half_list
    monkeypatch.setattr(neighbours, "half_list", lambda *a, **k: builds.append(1) or real(*a, **k))
    settings = dict(nve_steps=40, equilibrate_steps=20, relax_steps=5, log_interval=5, seed=3)
    plain = run_md(load("tiny"), ethanol, MdSettings(**settings))
    every_step, builds[:] = len(builds), []
    skinned = run_md(load("tiny"), ethanol, MdSettings(**settings, skin=0.5))
    assert every_step >= 60 and len(builds) < every_step / 4
    np.testing.assert_allclose(skinned.run.potential, plain.run.potential, rtol=0, atol=1e-4)
    np.testing.assert_allclose(skinned.run.positions[-1], plain.run.positions[-1], rtol=0, atol=1e-4)
    with pytest.raises(UserInputError, match="skin"):
        MdSettings(**settings, skin=-0.1).check()
