"""Where the project's settings, calibration data and presets live."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The folder holding `targets/` and `calib/`: $DEPLOYCC_HOME, else the source checkout."""
    env = os.environ.get("DEPLOYCC_HOME")
    if env:
        return Path(env)
    return PACKAGE_DIR.parent


def targets_dir() -> Path:
    return project_root() / "targets"


def calib_dir() -> Path:
    return project_root() / "calib"


def default_calib_file(periodic: bool = False) -> Path:
    """Parity structures: molecules, or (for periodic models) metal cells, slabs and clusters."""
    return calib_dir() / ("metals.h5" if periodic else "molecules.h5")


def presets_dir() -> Path:
    return PACKAGE_DIR / "presets"


def artifacts_root() -> Path:
    return Path(os.environ.get("DEPLOYCC_ARTIFACTS", Path.cwd() / "artifacts"))
