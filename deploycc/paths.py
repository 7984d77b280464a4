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


def check_output_file(path: Path, option: str = "--out", inputs: tuple[Path, ...] = ()) -> Path:
    """Before any work: `path` can be written as a file (not a folder, below folders only, writable) and is
    none of `inputs`; else one line (UserInputError, or StorageError when the place is not writable)."""
    from .errors import StorageError, UserInputError

    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{option} {path} is a folder; give a file name")
    for source in inputs:
        if path.exists() and Path(source).exists() and os.path.samefile(path, source):
            raise UserInputError(f"{option} {path} is an input of this command: write to another file")
    if path.is_symlink() and not path.exists():
        raise UserInputError(f"{option} {path} is a broken symbolic link: remove it or choose another name")
    existing = path.parent if str(path.parent) else Path(".")
    while not existing.exists():
        if existing.is_symlink():
            raise UserInputError(f"{option} {path}: {existing} is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(f"cannot write {option} {path}: {existing} is not writable")
    return path
