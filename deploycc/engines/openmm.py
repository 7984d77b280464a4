"""OpenMM: deploycc as the potential of an OpenMM System, through openmmml's `MLPotential('ase')`.

openmmml (>= 1.4) wraps an ASE calculator in an `openmm.PythonForce`: at every force evaluation it copies the
Context's positions (and box vectors, for a periodic Topology) into an ase.Atoms in Å and converts the
calculator's eV and eV/Å to kJ/mol and kJ/mol/nm with ase.units.  Everything runs in Python, on the CPU or
wherever the artifact runs; OpenMM integrates.  docs/engines/openmm.md has the recipe and measured speeds.

An openmm-torch TorchForce export is deliberately absent: that wheel's SWIG runtime does not match
OpenMM 8.6's, so it could not be tested here.
"""

from __future__ import annotations

import os
from typing import Any

import ase.units
import numpy as np

from ..errors import MissingDependencyError, UserInputError
from ..runtime.ase import DeployccCalculator
from ..runtime.predictor import Predictor

# kJ/mol per eV (96.485332...): openmmml converts with ase.units, so the same factor undoes it exactly.
EV_IN_KJ_PER_MOL = ase.units.mol / ase.units.kJ


def import_openmm() -> Any:
    """The `openmm` module, or MissingDependencyError naming the extra that installs it."""
    try:
        import openmm
        import openmm.app  # noqa: F401  (the Topology and Simulation live there)
        from openmmml import MLPotential  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(f"OpenMM and openmmml are needed ({error}); "
                                     "pip install deploycc[openmm]") from None
    return openmm


def topology_of(atoms) -> Any:
    """An OpenMM Topology for ase.Atoms: one chain, one residue "MOL", one atom per ASE atom in ASE order (named
    symbol + index), no bonds; the periodic box vectors for a fully periodic structure."""
    openmm = import_openmm()
    from openmm import unit

    topology = openmm.app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for index, (number, symbol) in enumerate(zip(atoms.numbers, atoms.get_chemical_symbols())):
        topology.addAtom(f"{symbol}{index + 1}", openmm.app.Element.getByAtomicNumber(int(number)), residue)
    if atoms.pbc.all():
        topology.setPeriodicBoxVectors(reduced_box(np.asarray(atoms.cell.array)) * 0.1 * unit.nanometer)
    elif atoms.pbc.any():
        raise UserInputError(f"OpenMM takes structures periodic along all three axes or none; this one has "
                             f"pbc={atoms.pbc.tolist()}")
    return topology


def reduced_box(cell: np.ndarray) -> np.ndarray:
    """The cell (rows a, b, c in Å) when it is in OpenMM's reduced form, else UserInputError: a along x, b in the
    xy plane, and ax >= 2|bx|, ax >= 2|cx|, by >= 2|cy| (OpenMM refuses other boxes)."""
    a, b, c = cell
    upper = (a[1], a[2], b[2])
    reduced = (a[0] > 0 and b[1] > 0 and c[2] > 0 and a[0] >= 2 * abs(b[0]) and a[0] >= 2 * abs(c[0])
               and b[1] >= 2 * abs(c[1]))
    if max(abs(v) for v in upper) > 1e-12 * a[0] or not reduced:
        raise UserInputError("OpenMM needs the cell in reduced form (a along x, b in the xy plane, small tilts); "
                             "rotate and reduce it first, e.g. with ase.geometry.minkowski_reduce")
    return np.array(cell, dtype=float)


def calculator_of(source: str | os.PathLike | Predictor | DeployccCalculator, device: str | None = None,
                  skin: float = 0.0) -> DeployccCalculator:
    """A DeployccCalculator for a source (artifact folder, checkpoint, preset, Predictor) or the one given."""
    if isinstance(source, DeployccCalculator):
        return source
    return DeployccCalculator(source, device=device, skin=skin)


def create_system(atoms, source: str | os.PathLike | Predictor | DeployccCalculator = "tiny",
                  device: str | None = None, skin: float = 0.0, remove_cm_motion: bool = True
                  ) -> tuple[Any, Any, Any]:
    """(openmm.System, Topology, positions in nm) for ase.Atoms, with deploycc as the only force.

    `source` is anything `deploycc.api.load` takes, a Predictor, or a ready DeployccCalculator; `skin` (Å) is
    the calculator's Verlet skin.  Masses are OpenMM's element masses.  `remove_cm_motion` adds OpenMM's
    CMMotionRemover (openmmml's default)."""
    if len(atoms) == 0:
        raise UserInputError("the structure has no atoms")
    import_openmm()
    from openmm import unit
    from openmmml import MLPotential

    topology = topology_of(atoms)
    calculator = calculator_of(source, device, skin)
    system = MLPotential("ase").createSystem(topology, removeCMMotion=remove_cm_motion, calculator=calculator)
    positions = np.asarray(atoms.positions, dtype=float) * 0.1 * unit.nanometer
    return system, topology, positions


def simulation(atoms, source: str | os.PathLike | Predictor | DeployccCalculator = "tiny",
               timestep_fs: float = 0.5, temperature: float | None = None, friction_per_ps: float = 1.0,
               platform: str = "Reference", device: str | None = None, skin: float = 0.0) -> Any:
    """An openmm.app.Simulation of ase.Atoms with deploycc forces, positions set: velocity Verlet (NVE) when
    `temperature` is None, else Langevin middle at `temperature` K with `friction_per_ps`.  The Reference
    platform is the default because the cost is in the model, not in OpenMM's integration."""
    openmm = import_openmm()
    from openmm import unit

    if timestep_fs <= 0:
        raise UserInputError(f"timestep_fs must be positive, got {timestep_fs}")
    system, topology, positions = create_system(atoms, source, device, skin)
    step = timestep_fs * unit.femtoseconds
    if temperature is None:
        integrator = openmm.VerletIntegrator(step)
    else:
        integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, friction_per_ps / unit.picosecond,
                                                     step)
    try:
        chosen = openmm.Platform.getPlatformByName(platform)
    except Exception:  # OpenMMException: the platform is not available in this build
        names = [openmm.Platform.getPlatform(k).getName() for k in range(openmm.Platform.getNumPlatforms())]
        raise UserInputError(f"OpenMM platform '{platform}' is not available; choose one of {names}") from None
    sim = openmm.app.Simulation(topology, system, integrator, chosen)
    sim.context.setPositions(positions)
    return sim


def energy_and_forces(context) -> tuple[float, np.ndarray]:
    """Potential energy (eV) and forces (eV/Å, OpenMM's particle order = ASE order) of an OpenMM Context."""
    from openmm import unit

    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / EV_IN_KJ_PER_MOL
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return float(energy), np.asarray(forces) / (10 * EV_IN_KJ_PER_MOL)


def positions_of(context) -> np.ndarray:
    """The Context's positions in Å [N, 3]."""
    from openmm import unit

    state = context.getState(getPositions=True)
    return np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
