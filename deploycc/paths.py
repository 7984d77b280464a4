"""Where the shipped calibration data and presets live, and where artifacts go."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def calib_dir() -> Path:
    """The calibration structures shipped with the package (parity and benchmark workloads)."""
    return PACKAGE_DIR / "calib"


def default_calib_file(periodic: bool = False) -> Path:
    """Parity structures: molecules, or (for models trained on metals) metal cells, slabs and clusters."""
    return calib_dir() / ("metals.h5" if periodic else "molecules.h5")


def presets_dir() -> Path:
    return PACKAGE_DIR / "presets"


def artifacts_root() -> Path:
    return Path(os.environ.get("DEPLOYCC_ARTIFACTS", Path.cwd() / "artifacts"))
