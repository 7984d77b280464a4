"""The shipped presets: loadable, small, with their training record; they build and verify on the calibration
sets shipped in the package (deploycc/calib)."""

from __future__ import annotations

import pytest

from deploycc.build import build
from deploycc.checkpoint import load_checkpoint, preset_path
from deploycc.model import PRESET_CONFIGS
from deploycc.paths import calib_dir, default_calib_file
from deploycc.verify import verify


# The other presets: xtb for molecules, emt for metals, any elements.
TEACHERS = {"tiny-ani1x": "ani1x", "original-ani1x": "ani1x", "metals-7net": "sevennet"}
ELEMENTS = {"tiny-ani1x": {1, 6, 7, 8}, "original-ani1x": {1, 6, 7, 8}, "metals-7net": {13, 28, 29, 46, 47, 78, 79}}


@pytest.mark.parametrize("name", sorted(PRESET_CONFIGS))
def test_shipped_preset_loads_with_its_training_record(name):
    path = preset_path(name)
    assert path.is_file(), f"preset {name} is not shipped at {path}"
    assert path.stat().st_size < 3_000_000
    checkpoint = load_checkpoint(name)
    assert checkpoint.name == name and checkpoint.config == PRESET_CONFIGS[name]
    metrics = checkpoint.metadata["test_metrics"]
    assert metrics["structures"] > 0 and 0 < metrics["force_rmse"] < 1.0
    assert checkpoint.metadata["teacher"] == TEACHERS.get(name, "emt" if PRESET_CONFIGS[name].periodic else "xtb")
    assert checkpoint.elements and set(checkpoint.elements) <= ELEMENTS.get(name, set(range(1, 119)))


def test_calibration_sets_ship_inside_the_package():
    from pathlib import Path

    import deploycc

    assert calib_dir() == Path(deploycc.__file__).resolve().parent / "calib"
    assert default_calib_file() == calib_dir() / "molecules.h5" and default_calib_file().is_file()
    assert default_calib_file(periodic=True) == calib_dir() / "metals.h5" and default_calib_file(True).is_file()


@pytest.mark.parametrize("target", ["eager", "onnx"])
def test_tiny_builds_and_verifies_on_the_shipped_molecules(target, tmp_path):
    result = build("tiny", target, tmp_path)
    assert result.parity["passed"] and result.parity["data"] == str(default_calib_file())
    report = verify(result.folder)
    assert report["parity"]["passed"] and report["data"] == str(default_calib_file())
    # The calibration set carries GFN2-xTB labels: the artifact is as accurate as eager against the teacher.
    labels = report["vs_labels"]
    assert labels[target]["force_rmse"] == pytest.approx(labels["eager"]["force_rmse"], rel=1e-3)
    assert labels["eager"]["force_rmse"] < 1.0


def test_metals_preset_builds_for_onnx_and_verifies_on_the_shipped_metals(tmp_path):
    result = build("metals-tiny", "onnx", tmp_path)
    assert result.parity["passed"]
    assert result.parity["data"] == str(default_calib_file(periodic=True))
    assert "virial" in {c["name"] for c in result.parity["checks"]}
    report = verify(result.folder)
    assert report["parity"]["passed"]
    labels = report["vs_labels"]  # the shipped metals set carries EMT labels
    assert labels["onnx"]["force_rmse"] == pytest.approx(labels["eager"]["force_rmse"], rel=1e-3)
    assert labels["eager"]["force_rmse"] < 0.15
