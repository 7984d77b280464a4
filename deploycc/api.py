"""Python API: `load()` any artifact, checkpoint or preset into a Predictor for ASE structures."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .batching import pad
from .model.stress import stress_from_virial
from .periodic import check_cell, pad_cells
from .errors import UnseenElementWarning, UserInputError
from .targets.base import Runner

COINCIDENT_TOLERANCE = 1e-3  # Angstrom: two atoms closer than this are "at the same position"
UNSEEN_POLICIES = ("warn", "refuse", "allow")


def formula(numbers: np.ndarray) -> str:
    """Hill formula of atomic numbers; never fails (numbers ASE has no symbol for are written Z<n>)."""
    from ase.data import chemical_symbols
    from ase.symbols import Symbols

    z = np.asarray(numbers, dtype=np.int64)
    if len(z) and (z.min() < 0 or z.max() >= len(chemical_symbols)):
        counts = dict(zip(*np.unique(z, return_counts=True)))
        return "".join(f"Z{int(k)}" + (f"x{int(n)}" if n > 1 else "") for k, n in counts.items())
    return Symbols(z).get_chemical_formula()


def coincident_atoms(positions: np.ndarray, tolerance: float = COINCIDENT_TOLERANCE) -> tuple[int, int] | None:
    """The first pair (i < j) of atoms closer than `tolerance`, or None (vectorised O(N^2)).

    Plain Cartesian distances: right for isolated structures.  Periodic structures need the minimum-image
    convention (an atom and another's periodic image can coincide) and are not checked here."""
    r = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(r) < 2:
        return None
    diff = r[:, None, :] - r[None, :, :]
    d2 = np.einsum("ijk,ijk->ij", diff, diff)
    np.fill_diagonal(d2, np.inf)
    close = d2 < tolerance * tolerance  # NaN compares False: never "coincident"
    if not close.any():  # the common case: no index search
        return None
    first = np.argwhere(np.triu(close, k=1))[0]
    return int(first[0]), int(first[1])


def check_no_coincident_atoms(where: str, positions: np.ndarray) -> None:
    """Refuse a structure with two atoms at the same position (one line naming the atom indices)."""
    pair = coincident_atoms(positions)
    if pair is not None:
        raise UserInputError(f"{where} has atoms {pair[0]} and {pair[1]} at the same position (closer than "
                             f"{COINCIDENT_TOLERANCE:g} Å); remove the duplicate atom")


def check_unseen_policy(policy: str) -> str:
    if policy not in UNSEEN_POLICIES:
        raise UserInputError(f"unseen_elements must be one of {', '.join(UNSEEN_POLICIES)}, got '{policy}'")
    return policy


def check_unseen_elements(where: str, numbers: np.ndarray, elements: Iterable[int] | None, policy: str,
                          label: str) -> None:
    """Warn about (or refuse, or allow) elements absent from the model's training data; None = unknown."""
    if elements is None or policy == "allow":
        return
    from ase.data import chemical_symbols

    unseen = sorted({int(z) for z in np.unique(numbers)} - {int(e) for e in elements})
    if not unseen:
        return
    names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unseen)
    message = f"{where} contains {names}, absent from the training data of {label}: its results are extrapolation"
    if policy == "refuse":
        raise UserInputError(f"{message}; use unseen_elements='warn' or 'allow' to run it anyway")
    warnings.warn(f"{message} (unseen_elements='refuse' makes this an error, 'allow' silences it)",
                  UnseenElementWarning, stacklevel=4)


def check_structures(numbers: Sequence[np.ndarray], positions: Sequence[np.ndarray], max_z: int, label: str,
                     elements: Iterable[int] | None = None, unseen_elements: str = "warn", source: str = "") -> None:
    """Predictor's checks on raw arrays of isolated structures (a structure file given to `verify`).

    Structures above the atom profile are not refused here: parity skips and counts them."""
    elements = None if elements is None else frozenset(int(e) for e in elements)
    prefix = f"{source}: " if source else ""
    for k, (z, r) in enumerate(zip(numbers, positions)):
        z, r = np.asarray(z), np.asarray(r, dtype=np.float64)
        where = f"{prefix}structure {k} ({formula(z)})" if len(z) else f"{prefix}structure {k}"
        if len(z) == 0:
            raise UserInputError(f"{where} has no atoms")
        if z.min() < 1 or z.max() > max_z:
            raise UserInputError(f"{where} has atomic number {int(z.max() if z.max() > max_z else z.min())}"
                                 f" outside 1..{max_z}")
        if not np.all(np.isfinite(r)):
            raise UserInputError(f"{where} has NaN or infinite positions")
        check_no_coincident_atoms(where, r)
        check_unseen_elements(where, z, elements, unseen_elements, label)


class Predictor:
    """Energies and forces of lists of structures; pads, batches and splits at the profile maximum."""

    def __init__(self, runner: Runner, max_batch: int, max_atoms: int, max_z: int, label: str,
                 elements: Iterable[int] | None = None, unseen_elements: str = "warn") -> None:
        self.runner = runner
        self.max_batch = max_batch
        self.max_atoms = max_atoms
        self.max_z = max_z
        self.label = label
        self.elements = None if elements is None else frozenset(int(e) for e in elements)  # None: unknown
        self.unseen_elements = check_unseen_policy(unseen_elements)

    def validate(self, atoms_list: Sequence, first_index: int = 0) -> None:
        """Refuse the first bad structure (one-line UserInputError naming its index, counted from
        `first_index` when `atoms_list` is one chunk of a longer file)."""
        for k, atoms in enumerate(atoms_list, start=first_index):
            z = atoms.get_atomic_numbers()
            if self._acceptable(atoms, z):
                continue
            where = f"structure {k} ({formula(z)})" if len(z) else f"structure {k}"
            if len(z) == 0:
                raise UserInputError(f"{where} has no atoms")
            if len(z) > self.max_atoms:
                raise UserInputError(f"{where} has {len(z)} atoms; {self.label} takes at most {self.max_atoms}")
            if z.min() < 1 or z.max() > self.max_z:
                raise UserInputError(f"{where} has atomic number {int(z.max() if z.max() > self.max_z else z.min())}"
                                     f" outside 1..{self.max_z}")
            if not np.all(np.isfinite(atoms.get_positions())):
                raise UserInputError(f"{where} has NaN or infinite positions")
            if not np.any(atoms.get_pbc()):  # periodic structures: minimum-image coincidence, not checked yet
                check_no_coincident_atoms(where, atoms.get_positions())
            check_unseen_elements(where, z, self.elements, self.unseen_elements, self.label)
            if np.any(atoms.get_pbc()):
                if not self.runner.periodic:
                    raise UserInputError(f"{where} is periodic but {self.label} was built without PBC support; "
                                         "use a periodic model (e.g. metals-tiny) or set pbc=False")
                check_cell(atoms.get_cell().array, atoms.get_pbc(), self.runner.cutoff, where)

    def _acceptable(self, atoms, z: np.ndarray) -> bool:
        """Fast path of `validate` for a molecule that passes every check (no error label is built);
        False sends the structure through the full checks, which name what is wrong."""
        if len(z) == 0 or len(z) > self.max_atoms or z.min() < 1 or z.max() > self.max_z or np.any(atoms.pbc):
            return False
        positions = atoms.positions
        if not np.isfinite(positions).all() or coincident_atoms(positions) is not None:
            return False
        return self.elements is None or self.unseen_elements == "allow" or self.elements.issuperset(z.tolist())

    def predict(self, atoms_list: Sequence) -> tuple[np.ndarray, list[np.ndarray]]:
        """Energies [B] in eV and per-structure forces [n_k, 3] in eV/Angstrom."""
        energies, forces, _stresses = self.evaluate(atoms_list)
        return energies, forces

    def evaluate(self, atoms_list: Sequence, check: bool = True
                 ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None]:
        """Energies [B] (eV), forces [n_k, 3] (eV/Angstrom) and, from periodic artifacts, stresses [B, 3, 3]
        (eV/Angstrom^3, ASE's convention: (1/V) dE/d(strain) with V the volume of the cell as given; NaN for
        structures without periodic axes or without a cell volume).  `check=False` skips `validate` for
        structures the caller has already validated."""
        atoms_list = list(atoms_list)
        if check:
            self.validate(atoms_list)
        energies = np.zeros(len(atoms_list))
        forces: list[np.ndarray] = [np.zeros((0, 3))] * len(atoms_list)
        stresses = np.full((len(atoms_list), 3, 3), np.nan) if self.runner.periodic else None
        order = np.argsort([len(a) for a in atoms_list], kind="stable")  # similar sizes share a batch
        for start in range(0, len(order), self.max_batch):
            idx = order[start : start + self.max_batch]
            z, r = pad([atoms_list[k].get_atomic_numbers() for k in idx],
                       [atoms_list[k].get_positions() for k in idx])
            periodic = ()
            if self.runner.periodic:
                periodic = pad_cells([atoms_list[k].get_cell().array for k in idx],
                                     [atoms_list[k].get_pbc() for k in idx], len(idx))
            energy, force, virial = self.runner.evaluate(z, r, *periodic)
            energy = energy.detach().double().cpu().numpy()
            force = force.detach().double().cpu().numpy()
            virial = None if virial is None else virial.detach().double().cpu().numpy()
            for row, k in enumerate(idx):
                energies[k] = energy[row]
                forces[k] = force[row, : len(atoms_list[k])]
                if virial is not None and stresses is not None and np.any(atoms_list[k].get_pbc()):
                    stresses[k] = stress_from_virial(virial[row], atoms_list[k].get_cell().array)
        return energies, forces, stresses


def load(source: str | os.PathLike, device: str | None = None, unseen_elements: str = "warn") -> Predictor:
    """A predictor for an artifact folder or file, a checkpoint path, or a preset name.

    `unseen_elements`: what to do with a structure holding an element absent from the training data —
    "warn" (UnseenElementWarning, the default), "refuse" (UserInputError) or "allow"."""
    from .artifacts import recover_if_interrupted
    from .checkpoint import load_checkpoint
    from .pipeline import open_artifact, resolve_settings
    from .targets.eager import EagerRunner

    check_unseen_policy(unseen_elements)
    path = Path(source)
    folder = path.parent if path.is_file() and (path.parent / "manifest.json").is_file() else path
    recover_if_interrupted(folder)  # a build killed mid-publish: restore the previous artifact
    if folder.is_dir():
        runner, manifest, settings = open_artifact(folder, device)
        return Predictor(runner, settings.batch.max, settings.atoms.max, manifest["model_config"]["max_z"],
                         f"{manifest['model']}/{manifest['target']}", artifact_elements(folder, manifest),
                         unseen_elements)
    checkpoint = load_checkpoint(source)
    settings = resolve_settings("eager", device)
    runner = EagerRunner(checkpoint.model, settings.device)
    return Predictor(runner, settings.batch.max, 10**6, checkpoint.config.max_z, f"{checkpoint.name}/eager",
                     checkpoint.elements, unseen_elements)


def artifact_elements(folder: Path, manifest: dict) -> list[int] | None:
    """The training elements an artifact's manifest records; older manifests: from its reference checkpoint."""
    if "elements" in manifest:
        return manifest["elements"]
    from .errors import DeployccError
    from .pipeline import reference_checkpoint

    try:
        return reference_checkpoint(folder, manifest).elements
    except DeployccError:
        return None  # unknown: no check


