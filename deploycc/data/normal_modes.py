"""Normal-mode sampling (ANI-1's way of making thermal-like frames without MD): a molecule's normal modes at its
force-field minimum, displaced by classical harmonic amplitudes at a temperature drawn per frame.

The modes come from RDKit's MMFF94 (UFF where MMFF has no parameters), whose Hessian is cheap: central
differences of its analytic gradient, 6N calls of microseconds.  The teacher then labels the displaced frames, so
the modes only decide where frames are made, never their labels; a teacher minimum that differs from MMFF's just
shifts the frames' centre.  Each frame costs one teacher call (teacher MD costs `md_stride`), which is what makes
thermal frames affordable for a slow teacher such as GFN2-xTB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .clusters import is_cluster

KB_KCAL = 0.0019872041  # kcal/mol/K: MMFF's energy unit
TEMPERATURES = (300.0, 1000.0)  # K, drawn per frame, as the teacher-MD walkers
FLOOR_WAVENUMBER = 100.0  # cm^-1: softer modes (torsions) are displaced as if this stiff
MAX_STRETCH = 0.3  # a frame with a bond longer or shorter than this share of its length at the minimum is redrawn
REDRAWS = 24  # draws of a frame before the origin is given; the temperature halves every 6 draws
# (cm^-1)^2 per kcal/mol/Å²/amu: omega = sqrt(lambda * 4.184e26 s^-2), wavenumber = omega / (2 pi c)
WAVENUMBER_PER_SQRT_STIFFNESS = float(np.sqrt(4.184e26) / (2.0 * np.pi * 2.99792458e10))
_STEP = 1e-3  # Å, the finite-difference step of the Hessian
_LINEAR = 1e-3  # relative singular value below which a rigid rotation is absent (a linear molecule)


@dataclass(frozen=True)
class Modes:
    """The vibrations of one molecule at its force-field minimum."""

    numbers: np.ndarray  # (N,)
    origin: np.ndarray  # (N, 3) Å, the minimum
    displacements: np.ndarray  # (3N, M) Å per unit mass-weighted mode coordinate (amu^1/2 Å)
    stiffness: np.ndarray  # (M,) eigenvalues of the mass-weighted Hessian, kcal/mol/Å²/amu
    bonds: np.ndarray  # (B, 2) atom indices of the molecule's bonds

    @property
    def wavenumbers(self) -> np.ndarray:
        """cm^-1 (negative for an unstable mode)."""
        return np.sign(self.stiffness) * np.sqrt(np.abs(self.stiffness)) * WAVENUMBER_PER_SQRT_STIFFNESS

    def displaced(self, temperature: float, rng: np.random.Generator) -> np.ndarray:
        """Positions with each mode at a classical harmonic amplitude of `temperature` (K): N(0, kT / lambda).
        Modes are straight lines, so a large torsion amplitude stretches the bonds of the rotating atoms: a draw
        that stretches or shortens a bond by more than `MAX_STRETCH` is redrawn (cooler after every 6)."""
        floor = (FLOOR_WAVENUMBER / WAVENUMBER_PER_SQRT_STIFFNESS) ** 2
        scale = np.sqrt(KB_KCAL / np.maximum(np.abs(self.stiffness), floor))
        for attempt in range(REDRAWS):
            amplitudes = rng.normal(0.0, scale * np.sqrt(temperature * 0.5 ** (attempt // 6)))
            positions = self.origin + (self.displacements @ amplitudes).reshape(-1, 3)
            if self.bonded(positions):
                return positions
        return self.origin.copy()

    def bonded(self, positions: np.ndarray) -> bool:
        """Every bond within `MAX_STRETCH` of its length at the minimum."""
        if len(self.bonds) == 0:
            return True
        i, j = self.bonds.T
        ratio = np.linalg.norm(positions[i] - positions[j], axis=1) / np.linalg.norm(
            self.origin[i] - self.origin[j], axis=1)
        return bool(np.all(np.abs(ratio - 1.0) <= MAX_STRETCH))


def _force_field(mol: Any) -> Any:
    from rdkit.Chem import AllChem

    if AllChem.MMFFHasAllMoleculeParams(mol):
        return AllChem.MMFFGetMoleculeForceField(mol, AllChem.MMFFGetMoleculeProperties(mol))
    if AllChem.UFFHasAllMoleculeParams(mol):
        return AllChem.UFFGetMoleculeForceField(mol)
    return None


def _minimum(mol: Any) -> np.ndarray | None:
    """The force field's minimum near the conformer (flat, Å); None when no force field covers the molecule,
    RDKit fails on it, or the minimiser does not converge."""
    try:
        ff = _force_field(mol)
        if ff is None:
            return None
        ff.Initialize()
        for _ in range(5):
            if ff.Minimize(maxIts=2000) == 0:
                positions = np.asarray(ff.Positions(), dtype=float)
                conformer = mol.GetConformer()
                for k in range(mol.GetNumAtoms()):
                    conformer.SetAtomPosition(k, positions[3 * k: 3 * k + 3].tolist())
                return positions
    except Exception:  # noqa: BLE001 - an RDKit failure on one molecule: it is rattled instead
        return None
    return None


def _gradient(ff: Any, x: np.ndarray) -> np.ndarray:
    """kcal/mol/Å at `x`.  RDKit's CalcGrad(pos) alone is wrong for MMFF (terms cached by the last CalcEnergy
    are reused), so the energy is computed first at the same positions."""
    positions = x.tolist()
    ff.CalcEnergy(positions)
    return np.asarray(ff.CalcGrad(positions), dtype=float)


def _hessian(ff: Any, x0: np.ndarray) -> np.ndarray:
    """Central differences of the analytic gradient, symmetrised (kcal/mol/Å²)."""
    n = len(x0)
    hessian = np.empty((n, n))
    for k in range(n):
        step = np.zeros(n)
        step[k] = _STEP
        hessian[:, k] = (_gradient(ff, x0 + step) - _gradient(ff, x0 - step)) / (2.0 * _STEP)
    return 0.5 * (hessian + hessian.T)


def _internal_basis(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """An orthonormal basis (3N, 3N - 6, or - 5 when linear) of mass-weighted motions that neither translate
    nor rotate the molecule."""
    root = np.sqrt(masses)
    centred = positions - (masses[:, None] * positions).sum(0) / masses.sum()
    rigid = []
    for axis in np.eye(3):
        rigid.append((root[:, None] * axis).ravel())
        rigid.append((root[:, None] * np.cross(axis, centred)).ravel())
    u, s, _ = np.linalg.svd(np.stack(rigid, axis=1), full_matrices=True)
    rank = int((s > _LINEAR * s.max()).sum())
    return u[:, rank:]


def modes_of(smiles: str, positions: np.ndarray) -> Modes | None:
    """The modes of a molecule (SMILES, and a conformer in `deploycc.data.generate.embed`'s atom order), or None
    for a cluster, an atom order that does not match, or a molecule no force field covers."""
    from ase.data import atomic_masses
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    if is_cluster(smiles) or Chem.MolFromSmiles(smiles) is None:
        return None
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    if mol.GetNumAtoms() != len(positions) or mol.GetNumAtoms() < 2:
        return None
    conformer = Chem.Conformer(mol.GetNumAtoms())
    for k, (x, y, z) in enumerate(np.asarray(positions, dtype=float)):
        conformer.SetAtomPosition(k, Point3D(x, y, z))
    mol.AddConformer(conformer, assignId=True)
    x0 = _minimum(mol)
    if x0 is None:
        return None
    ff = _force_field(mol)
    numbers = np.asarray([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    masses = atomic_masses[numbers]
    root = np.repeat(np.sqrt(masses), 3)
    weighted = _hessian(ff, x0) / np.outer(root, root)
    basis = _internal_basis(x0.reshape(-1, 3), masses)
    stiffness, vectors = np.linalg.eigh(basis.T @ weighted @ basis)
    bonds = np.asarray([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()], dtype=np.int64)
    return Modes(numbers, x0.reshape(-1, 3), (basis @ vectors) / root[:, None], stiffness, bonds.reshape(-1, 2))


class NormalModeSampler:
    """Frames of a conformer pool by normal-mode sampling; modes are computed the first time a conformer is
    drawn.  A conformer without modes (a cluster, no force field) is rattled instead, as the rattled frames are."""

    def __init__(self, pool: Sequence[tuple[int, Any]], smiles: dict[int, str]) -> None:
        self.pool = pool
        self.smiles = smiles
        self._modes: dict[int, Modes | None] = {}

    def modes(self, index: int) -> Modes | None:
        if index not in self._modes:
            mol_id, atoms = self.pool[index]
            modes = modes_of(self.smiles[mol_id], atoms.positions)
            if modes is not None and not np.array_equal(modes.numbers, atoms.numbers):
                modes = None
            self._modes[index] = modes
        return self._modes[index]

    def frames(self, count: int, rng: np.random.Generator) -> list[tuple[int, Any]]:
        """`count` (molecule id, ase.Atoms) frames, each of a random conformer at a temperature drawn in
        `TEMPERATURES`."""
        from .generate import RATTLE_WIDTHS

        out = []
        for index in rng.integers(0, len(self.pool), size=count):
            mol_id, atoms = self.pool[int(index)]
            temperature = rng.uniform(*TEMPERATURES)
            modes = self.modes(int(index))
            frame = atoms.copy()
            if modes is None:
                frame.positions = frame.positions + rng.normal(0.0, rng.uniform(*RATTLE_WIDTHS), frame.positions.shape)
            else:
                frame.positions = modes.displaced(temperature, rng)
            out.append((mol_id, frame))
        return out
