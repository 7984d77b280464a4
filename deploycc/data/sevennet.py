"""SevenNet-0 as an offline teacher for periodic metals (docs/teachers-sevennet.md).

SevenNet-0 (the 11 Jul 2024 checkpoint, `7net-0` in sevenn) is an E(3)-equivariant universal potential trained
on MPtrj (PBE/PBE+U), 89 elements, 5 Angstrom cutoff.  The sevenn wheel ships its checkpoint (about 10 MB under
`sevenn/pretrained_potentials/`), so it runs with no network.  sevenn itself would download the checkpoints it
does not ship; this module only ever opens a file that is already on disk and never asks sevenn to resolve a
name, so nothing is downloaded.

`generate_metals` makes a new calculator for every frame, so the model is loaded once per process and device
(about 2 s) and each later call only wraps it in a fresh `SevenNetCalculator` (milliseconds).
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any

from ..errors import MissingDependencyError

MODEL = "7net-0"  # SevenNet-0, 11Jul2024: what sevenn's own default '7net-0' means
_INSTALL = "pip install 'deploycc[sevennet]'"
_MISSING = f"teacher 'sevennet' needs sevenn: {_INSTALL}"
_NO_ACCELERATOR = "No tensor product accelerator"  # sevenn warns on every CPU calculator; cuEquivariant is GPU-only


def _import_error(exc: ImportError) -> MissingDependencyError:
    if (exc.name or "sevenn").split(".")[0] == "sevenn":
        return MissingDependencyError(_MISSING)
    # sevenn is there but one of its own dependencies (e3nn, torch_geometric, ...) is not or is broken
    return MissingDependencyError(f"{_MISSING} (sevenn is installed but importing it failed: {exc})")


def checkpoint_path() -> str:
    """The SevenNet-0 checkpoint that the installed sevenn wheel ships; never downloads it."""
    try:
        from sevenn import _const
    except ImportError as exc:
        raise _import_error(exc) from None
    shipped = getattr(_const, "SEVENNET_0_11Jul2024", None)
    candidates = []
    if shipped:
        prefix = getattr(_const, "_prefix", None)
        candidates.append(shipped)
        if prefix and shipped.startswith(prefix):  # sevenn's own second place for a checkpoint it downloaded
            candidates.append(shipped.replace(prefix, os.path.expanduser("~/.cache/sevennet"), 1))
    for path in candidates:
        if os.path.isfile(path):
            return path
    where = shipped or "sevenn/pretrained_potentials/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth"
    raise MissingDependencyError(
        f"teacher 'sevennet': the SevenNet-0 checkpoint is not in the installed sevenn ({where} is missing) and "
        f"deploycc does not download it: reinstall sevenn from PyPI ({_INSTALL})"
    )


@functools.lru_cache(maxsize=None)
def _model(device: str) -> Any:
    """The SevenNet-0 model built from the shipped checkpoint, once per process and device."""
    try:
        from sevenn.util import load_checkpoint
    except ImportError as exc:
        raise _import_error(exc) from None
    checkpoint = load_checkpoint(checkpoint_path())  # a path that exists: sevenn opens it, no name resolution
    model = checkpoint.build_model()
    model.set_is_batch_data(False)
    return model.to(device).eval()


def sevennet_calculator(device: str = "cpu") -> Any:
    """An ASE calculator (energy, forces, stress; eV, eV/Angstrom, eV/Angstrom^3) for SevenNet-0 on `device`."""
    try:
        from sevenn.calculator import SevenNetCalculator
    except ImportError as exc:
        raise _import_error(exc) from None
    model = _model(str(device))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NO_ACCELERATOR)
        return SevenNetCalculator(model, file_type="model_instance", device=device)
