"""The shipped presets: loadable, small, with their training record; tiny builds and verifies on calib/."""

from __future__ import annotations

import pytest

from deploycc.checkpoint import load_checkpoint, preset_path
from deploycc.model import PRESET_CONFIGS
from deploycc.paths import default_calib_file
from deploycc.pipeline import build
from deploycc.verify import verify


@pytest.mark.parametrize("name", sorted(PRESET_CONFIGS))
def test_shipped_preset_loads_with_its_training_record(name):
    path = preset_path(name)
    assert path.is_file(), f"preset {name} is not shipped at {path}"
    assert path.stat().st_size < 3_000_000
    checkpoint = load_checkpoint(name)
    assert checkpoint.config == PRESET_CONFIGS[name]
    metrics = checkpoint.metadata["test_metrics"]
    assert metrics["structures"] > 0 and 0 < metrics["force_rmse"] < 1.0
    assert checkpoint.metadata["teacher"] == ("emt" if PRESET_CONFIGS[name].periodic else "xtb")


@pytest.mark.parametrize("target", ["torchscript", "onnx"])
def test_tiny_builds_and_verifies_on_calib(target, tmp_path):
    result = build("tiny", target, tmp_path)
    assert result.parity["passed"]
    report = verify(result.folder, default_calib_file())
    assert report["parity"]["passed"]
    # calib/ carries GFN2-xTB labels: the artifact is as accurate as eager against the teacher.
    labels = report["vs_labels"]
    assert labels[target]["force_rmse"] == pytest.approx(labels["eager"]["force_rmse"], rel=1e-3)


def test_metals_preset_builds_for_onnx_and_verifies_on_periodic_calib(tmp_path):
    result = build("metals-tiny", "onnx", tmp_path)
    assert result.parity["passed"]
    assert result.parity["data"].endswith("metals.h5")
    report = verify(result.folder)
    assert report["parity"]["passed"]
    labels = report["vs_labels"]  # calib/metals.h5 carries EMT labels
    assert labels["onnx"]["force_rmse"] == pytest.approx(labels["eager"]["force_rmse"], rel=1e-3)
    assert labels["eager"]["force_rmse"] < 0.15
