"""Teachers by registry name: each makes an ASE calculator that labels structures."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import MissingDependencyError, UserInputError


@dataclass(frozen=True)
class Teacher:
    """A named source of reference energies and forces."""

    name: str
    make_calculator: Callable[[], Any]
    description: str


def _xtb() -> Any:
    try:
        from tblite.ase import TBLite
    except ImportError:
        raise MissingDependencyError("teacher 'xtb' needs tblite: pip install 'deploycc[data]'") from None
    return TBLite(method="GFN2-xTB", verbosity=0, max_iterations=250)


def _emt() -> Any:
    from ase.calculators.emt import EMT

    return EMT()


def _chgnet() -> Any:
    try:
        from chgnet.model.dynamics import CHGNetCalculator
    except ImportError:
        raise MissingDependencyError("teacher 'chgnet' needs chgnet: pip install 'deploycc[chgnet]'") from None
    return CHGNetCalculator(use_device="cpu")


TEACHERS: dict[str, Teacher] = {
    "xtb": Teacher("xtb", _xtb, "GFN2-xTB via tblite (semi-empirical QM, offline; default for molecules)"),
    "emt": Teacher("emt", _emt, "ASE's effective-medium theory (Al Cu Ag Au Ni Pd Pt, H C N O as toy)"),
    "chgnet": Teacher("chgnet", _chgnet, "CHGNet universal potential (optional extra, weights ship in the wheel)"),
}


def get_teacher(spec: str) -> Teacher:
    """A registered name, or `module:factory` naming any ASE calculator factory."""
    if spec in TEACHERS:
        return TEACHERS[spec]
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise UserInputError(f"teacher '{spec}' cannot be imported ({exc})") from None
        return Teacher(spec, factory, f"ASE calculator from {spec}")
    valid = ", ".join(TEACHERS)
    raise UserInputError(f"unknown teacher '{spec}': choose one of {valid}, or give module:factory")
