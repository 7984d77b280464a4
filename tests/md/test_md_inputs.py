"""`deploycc md` and bad inputs (issue 12, cases F6o2, F8a, W8a, W8b): output destinations checked before any
work, an exploded trajectory failing the stability check, temperatures outside the domain, one-atom structures
and a log interval that leaves no drift to fit. CLI cases run in this process; MD runs stay a few steps long."""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import ase
import ase.build
import ase.io
import numpy as np
import pytest

import deploycc.md.outputs as md_outputs
import deploycc.md.run as md_run
from deploycc.errors import UserInputError
from deploycc.md import (MdResult, MdSettings, Series, check_outputs, check_structure, run_md, stats_of,
                         zero_rotation)
from deploycc.runtime.load import load
from deploycc.runtime.predictor import Predictor
from deploycc.targets.base import Prediction

USER, STORAGE, FAILED = 65, 74, 1
QUICK = ["--steps", "20", "--equilibrate-ps", "0.005", "--relax-steps", "5", "--log-interval", "5"]


def one_error_line(result: tuple[int, str, str], expected: int, *fragments: str) -> str:
    code, out, err = result
    assert code == expected, (code, out[-2000:], err[-2000:])
    assert "Traceback" not in out + err and "Warning" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def ethanol_file(tmp_path) -> Path:
    path = tmp_path / "ethanol.xyz"
    ase.io.write(path, ase.build.molecule("CH3CH2OH"))
    return path


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the run gets as far as relaxing or writing (the checks must come first)."""

    def started(*args, **kwargs):
        raise AssertionError("the MD run started before its outputs were checked")

    monkeypatch.setattr(md_run, "relax", started)
    monkeypatch.setattr(md_run, "nve", started)


# --- F6o2: output destinations ---------------------------------------------------------------------------------


def test_read_only_out_is_one_line_exit_74_before_any_work(cli, ethanol_file, tmp_path, monkeypatch, no_work):
    """A read-only mount: os.access says no (as access(2) does for root on a read-only file system)."""
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: (
        False if Path(path).absolute().is_relative_to(readonly) else real_access(path, mode, *a, **k)))
    monkeypatch.setattr(md_outputs, "_read_only", lambda folder: True)
    line = one_error_line(cli("md", "tiny", "--structure", ethanol_file, *QUICK, "--out", readonly / "md" / "run"),
                          STORAGE, "cannot write the MD outputs", str(readonly), "read-only file system")
    assert not (readonly / "md").exists() and line.count("error:") == 1


def test_an_unwritable_existing_output_file_is_exit_74(cli, ethanol_file, tmp_path, monkeypatch, no_work):
    out = tmp_path / "out"
    out.mkdir()
    (out / "md.json").write_text("{}\n")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: (
        False if Path(path).name == "md.json" else real_access(path, mode, *a, **k)))
    one_error_line(cli("md", "tiny", "--structure", ethanol_file, *QUICK, "--out", out), STORAGE,
                   "cannot overwrite", "md.json")


@pytest.mark.parametrize("where, errno_code, fragment", [
    ("json", errno.EROFS, "Read-only file system"),
    ("trajectory", errno.ENOSPC, "no space left"),
])
def test_a_write_failing_during_the_run_is_one_line_exit_74(cli, ethanol_file, tmp_path, monkeypatch, where,
                                                           errno_code, fragment):
    """The disk turns read-only or full after the checks: the failing write still becomes one line."""
    import deploycc.artifact.layout as layout

    def refuse(path, *args, **kwargs):
        raise OSError(errno_code, os.strerror(errno_code), str(path))

    if where == "json":
        monkeypatch.setattr(layout, "write_json", refuse)
    else:
        monkeypatch.setattr(ase.io, "Trajectory", refuse)
    one_error_line(cli("md", "tiny", "--structure", ethanol_file, *QUICK, "--out", tmp_path / "out"), STORAGE,
                   fragment)


def _nve_traj_input(tmp_path):
    out = tmp_path / "previous"
    out.mkdir()
    ase.io.write(out / "nve.traj", ase.build.molecule("CH3CH2OH"))
    return out / "nve.traj", out


@pytest.mark.parametrize("case, fragment", [
    ("a file", "is a file, not a folder"),
    ("below a file", "is a file, not a folder"),
    ("the structure", "is the input structure"),
    ("holds the structure", "nve.traj is the input structure"),
    ("md.json a folder", "md.json is a folder"),
    ("name too long", "longer than"),
])
def test_bad_out_destinations_are_one_line_exit_65_before_any_work(cli, ethanol_file, tmp_path, case, fragment,
                                                                   no_work):
    structure = ethanol_file
    (tmp_path / "afile").write_text("not a folder\n")
    if case == "a file":
        out = tmp_path / "afile"
    elif case == "below a file":
        out = tmp_path / "afile" / "md"
    elif case == "the structure":
        out = ethanol_file
    elif case == "holds the structure":
        structure, out = _nve_traj_input(tmp_path)
    elif case == "md.json a folder":
        out = tmp_path / "out"
        (out / "md.json").mkdir(parents=True)
    else:
        out = tmp_path / ("x" * 300)
    before = structure.read_bytes()
    one_error_line(cli("md", "tiny", "--structure", structure, *QUICK, "--out", out), USER, fragment)
    assert structure.read_bytes() == before
    assert (tmp_path / "afile").read_text() == "not a folder\n"


def test_check_outputs_names_compare_trajectory_and_passes_a_fresh_folder(tmp_path):
    assert check_outputs(tmp_path / "new" / "md") == tmp_path / "new" / "md"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    (tmp_path / "out" / "compare.traj").mkdir(parents=True)
    check_outputs(tmp_path / "out")  # without a second model compare.traj is not written
    with pytest.raises(UserInputError, match="compare.traj is a folder"):
        check_outputs(tmp_path / "out", compare=True)


def test_run_md_checks_its_out_folder_before_relaxing(tmp_path, no_work):
    (tmp_path / "afile").write_text("x\n")
    with pytest.raises(UserInputError, match="not a folder"):
        run_md("ultra-tiny", ase.build.molecule("H2O"), MdSettings(nve_steps=10, log_interval=5),
               out=tmp_path / "afile" / "md")


# --- F8a: temperatures outside the domain, exploded trajectories ---------------------------------------------


@pytest.mark.parametrize("temperature, fragment", [
    ("1e9", "at most 10000 K"), ("10001", "at most 10000 K"), ("-5", "positive"), ("inf", "finite"),
    ("nan", "positive"),
])
def test_temperature_outside_the_domain_is_one_line_exit_65(cli, ethanol_file, tmp_path, temperature, fragment,
                                                             no_work):
    one_error_line(cli("md", "tiny", "--structure", ethanol_file, "--temperature", temperature, "--steps", "200",
                       "--out", tmp_path / "out"), USER, "temperature", fragment)
    assert not (tmp_path / "out").exists()


class ZeroForces(Predictor):
    """A planted bug: no forces at all, so atoms fly off in straight lines and energy is trivially conserved."""

    def __init__(self, inner: Predictor) -> None:
        self.__dict__.update(inner.__dict__)

    def run(self, batch, indices=None) -> Prediction:
        result = super().run(batch, indices)
        return Prediction(result.energies * 0.0, result.forces * 0.0, result.virials, result.offsets)


def test_a_structure_that_flies_apart_fails_the_stability_check():
    """Free flight at 3000 K: the drift is zero (every check passed before), but atoms lose all their neighbours
    within the cutoff, which stops the run and fails `stable`."""
    settings = MdSettings(temperature=3000.0, nve_steps=600, equilibrate_steps=0, relax_steps=2, log_interval=10)
    result = run_md(ZeroForces(load("ultra-tiny")), ase.build.molecule("CH3CH2OH"), settings)
    checks = {c.name: c for c in result.checks()}
    assert checks["drift"].passed  # energy is conserved: drift alone cannot see the explosion
    assert not result.stats.stable and not checks["stable"].passed and result.stats.steps < 600
    assert "lost all neighbours within the 5 Å cutoff" in checks["stable"].text
    assert "flew apart" in result.to_dict()["stats"]["stopped"]
    positions = result.run.positions[-1]
    nearest = np.sort(np.linalg.norm(positions[:, None] - positions[None], axis=-1), axis=1)[:, 1]
    assert nearest.max() > 5.0  # it really did


def test_a_run_with_one_sample_reports_the_drift_as_not_measured():
    atoms = ase.build.molecule("H2O")
    series = Series("m", np.zeros(1), np.zeros(1), np.ones(1), atoms.positions[None], 0, 0.1, False,
                    "a non-finite energy at 0 ps")
    settings = MdSettings(nve_steps=10, log_interval=5)
    result = MdResult("H2O", 3, 3, settings, {}, series, stats_of(series, 3, 3))
    drift, _, stable = result.checks()
    assert not drift.passed and "not measured: 1 energy sample" in drift.text
    assert not stable.passed and "a non-finite energy" in stable.text


def test_a_normal_run_keeps_every_atom_bonded_and_stable():
    settings = MdSettings(nve_steps=60, equilibrate_steps=20, relax_steps=10, log_interval=5)
    result = run_md("ultra-tiny", ase.build.molecule("CH3CH2OH"), settings)
    assert result.stats.stable and result.stats.stopped is None and result.stats.steps == 60


# --- W8a: one atom; zero rotation without dividing by zero ---------------------------------------------------


def test_one_atom_is_one_line_exit_65_without_warnings(cli, tmp_path, no_work):
    path = tmp_path / "one.xyz"
    ase.io.write(path, ase.Atoms("H", positions=[[0, 0, 0]]))
    one_error_line(cli("md", "tiny", "--structure", path, *QUICK, "--out", tmp_path / "out"), USER,
                   "has 1 atom: MD needs at least 2", "one.xyz")
    assert not (tmp_path / "out").exists()


def test_one_atom_periodic_cell_is_refused_with_a_hint():
    cell = ase.build.bulk("Cu", "fcc", a=3.61)
    with pytest.raises(UserInputError, match="needs at least 2 .*supercell"):
        check_structure(cell)
    with pytest.raises(UserInputError, match="has 1 atom"):
        run_md("metals-tiny", cell, MdSettings(nve_steps=10, log_interval=5))


@pytest.mark.parametrize("name", ["H2", "CO2", "CH3CH2OH"])
def test_zero_rotation_removes_angular_momentum_and_keeps_kinetic_energy(name):
    from ase.md import velocitydistribution as vd

    atoms = ase.build.molecule(name)
    atoms.set_velocities(np.random.default_rng(1).normal(size=(len(atoms), 3)) * 0.05)
    vd.Stationary(atoms)
    reference = atoms.copy()
    kinetic = atoms.get_kinetic_energy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zero_rotation(atoms)
    assert np.abs(atoms.get_angular_momentum()).max() < 1e-8
    assert atoms.get_kinetic_energy() == pytest.approx(kinetic, rel=1e-12)
    if name == "CH3CH2OH":  # a non-linear molecule: the same as ASE's ZeroRotation
        vd.ZeroRotation(reference)
        np.testing.assert_allclose(atoms.get_velocities(), reference.get_velocities(), atol=1e-10)


def test_a_diatomic_runs_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = run_md("ultra-tiny", ase.build.molecule("CO"),
                        MdSettings(nve_steps=20, equilibrate_steps=10, relax_steps=5, log_interval=5))
    assert result.dof == 1 and result.stats.steps == 20


# --- W8b: a log interval that leaves fewer than 2 samples -----------------------------------------------------


def test_log_interval_longer_than_the_run_is_one_line_exit_65(cli, ethanol_file, tmp_path, no_work):
    one_error_line(cli("md", "tiny", "--structure", ethanol_file, "--steps", "200", "--log-interval", "10000",
                       "--out", tmp_path / "out"), USER, "log-interval 10000", "at most 200")


def test_log_interval_equal_to_the_run_gives_two_samples_and_a_drift():
    MdSettings(nve_steps=200, log_interval=200).check()
    with pytest.raises(UserInputError, match="at least 2"):
        MdSettings(nve_steps=200, log_interval=201).check()
    result = run_md("ultra-tiny", ase.build.molecule("H2O"),
                    MdSettings(nve_steps=20, log_interval=20, equilibrate_steps=5, relax_steps=5))
    assert len(result.run.time_ps) == 2 and np.isfinite(result.stats.drift_mev_atom_ps)


@pytest.mark.parametrize("flag, value", [("--max-drift", "nan"), ("--max-temperature-error", "-0.1")])
def test_check_thresholds_outside_their_domain_are_exit_65(cli, ethanol_file, tmp_path, flag, value, no_work):
    one_error_line(cli("md", "tiny", "--structure", ethanol_file, flag, value, "--out", tmp_path / "out"), USER,
                   flag)


def test_atoms_that_collapse_during_nve_fail_stable_instead_of_blaming_the_input():
    from ase.calculators.calculator import Calculator, all_changes

    from deploycc.md.run import nve

    class Collapsing(Calculator):
        """Harmonic forces, then, from the fourth call on, the refusal the model gives two atoms 0.3 Å apart."""

        implemented_properties = ["energy", "forces"]
        calls = 0

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            Collapsing.calls += 1
            if Collapsing.calls >= 4:
                raise UserInputError("the structure (H2O) has atoms 0 and 1 0.3 Å apart, closer than the 0.5 Å")
            r = self.atoms.positions - self.atoms.positions.mean(0)
            self.results = {"energy": float((r**2).sum()), "forces": -2 * r}

    atoms = ase.build.molecule("H2O")
    atoms.calc = Collapsing()
    settings = MdSettings(temperature=300.0, nve_steps=20, log_interval=1)
    series = nve(atoms, "test", settings, dof=3 * len(atoms) - 6)
    assert not series.stable and "the model refused the structure the dynamics made" in series.stopped
    assert "0.3 Å apart" in series.stopped
