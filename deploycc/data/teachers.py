"""Teachers by registry name: each makes an ASE calculator that labels structures."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import MissingDependencyError, UserInputError


@dataclass(frozen=True)
class Teacher:
    """A named source of reference energies and forces."""

    name: str
    make_calculator: Callable[[], Any]
    description: str
    elements: frozenset[int] | None = None  # None: any element the calculator takes
    # Many structures in one call (energies [S] in eV, forces per structure in eV/Å), for teachers that are
    # much cheaper batched (ANI-1x); the others label one structure at a time through their calculator.
    label_batch: Callable[[Sequence[Any]], tuple[np.ndarray, list[np.ndarray]]] | None = None
    periodic: bool = True  # whether it labels structures with periodic axes

    def label(self, structures: Sequence[Any]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Energies and forces of ase.Atoms (raises what the teacher raises)."""
        if self.label_batch is not None:
            return self.label_batch(structures)
        calculator = self.make_calculator()
        energies, forces = [], []
        for atoms in structures:
            atoms = atoms.copy()
            atoms.calc = calculator
            energies.append(float(atoms.get_potential_energy()))
            forces.append(np.asarray(atoms.get_forces(), dtype=np.float64))
        return np.asarray(energies), forces


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


def _ani1x() -> Any:
    from .ani1x import Ani1xCalculator, shared_server

    shared_server()  # starts (or reuses) the server now, so that a missing torchani is one line up front
    return Ani1xCalculator()


def _ani1x_batch(structures: Sequence[Any]) -> tuple[np.ndarray, list[np.ndarray]]:
    from .ani1x import label_batch

    return label_batch(structures)


def _sevennet() -> Any:
    from .sevennet import sevennet_calculator

    return sevennet_calculator()


TEACHERS: dict[str, Teacher] = {
    "xtb": Teacher("xtb", _xtb, "GFN2-xTB via tblite (semi-empirical QM, offline; default for molecules)"),
    "emt": Teacher("emt", _emt, "ASE's effective-medium theory (Al Cu Ag Au Ni Pd Pt, H C N O as toy)"),
    "chgnet": Teacher("chgnet", _chgnet, "CHGNet universal potential (optional extra, weights ship in the wheel)"),
    "sevennet": Teacher("sevennet", _sevennet, "SevenNet-0 universal potential (optional extra; its checkpoint ships "
                        "in the wheel; ~0.3-3.5 s/frame on CPU)"),
    "ani1x": Teacher("ani1x", _ani1x, "ANI-1x 8-network ensemble (torchani 2.2.4's shipped weights; molecules of "
                     "H C N O; batched)", frozenset({1, 6, 7, 8}), _ani1x_batch, periodic=False),
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
