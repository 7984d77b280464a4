"""Numerical parity of an artifact against the eager reference: one comparator over named outputs, each
with its own tolerance, reported as one ✓/✗ line per output with its max abs and relative error.

Outputs: energy per atom of each structure (tolerance plus 4 float32 ulps of the total energy, the
rounding floor of any float32 artifact), forces per component (abs, or relative RMSE), and virial per atom
(periodic structures only).  Structures are run singly and in mixed batches (concatenated atoms, padded
neighbour slots), so the dynamic axes are exercised; any non-finite output fails.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import UserInputError
from .runtime.neighbours import Structure, neighbour_batch
from .runtime.validate import formula
from .targets.base import Prediction, Runner
from .targets.settings import Tolerances

FLOAT32_ULP = 2.0**-23  # relative spacing of float32 numbers


@dataclass
class OutputCheck:
    """One output's comparison: worst absolute and relative errors against its tolerance."""

    name: str
    max_abs: float
    rel_rmse: float
    tolerance: str
    passed: bool
    nan: bool = False


@dataclass
class ParityReport:
    """All checks of one artifact on one set of structures."""

    passed: bool
    structures: int
    batches: int
    checks: list[OutputCheck] = field(default_factory=list)
    skipped_too_large: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(name: str, reference: np.ndarray, candidate: np.ndarray, abs_tol: float, rel_tol: float | None = None,
            allowance: np.ndarray | float = 0.0, text: str = "") -> OutputCheck:
    """Pass when every |candidate - reference| <= abs_tol + allowance, or (given `rel_tol`) when the RMSE
    relative to the reference's RMS is at most rel_tol; any non-finite candidate value fails."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    out = np.asarray(candidate, dtype=np.float64).ravel()
    nan = bool(not np.isfinite(out).all())
    diff = np.abs(out - ref)
    max_abs = float(np.nanmax(diff)) if diff.size and not np.isnan(diff).all() else (float("nan") if nan else 0.0)
    scale = max(float(np.sqrt(np.mean(ref**2))) if ref.size else 0.0, 1e-12)
    rel = float(np.sqrt(np.mean(diff**2)) / scale) if diff.size else 0.0
    within = bool(np.all(diff <= abs_tol + np.asarray(allowance).ravel())) if diff.size else True
    passed = not nan and (within or (rel_tol is not None and rel <= rel_tol))
    return OutputCheck(name, max_abs, rel, text or f"≤ {abs_tol:g}", passed, nan)


def parity_batches(sizes: Sequence[int], batch_size: int, max_atoms: int, seed: int = 0) -> list[list[int]]:
    """Batches that exercise the dynamic axes: singles (the smallest, the largest and four random ones),
    then mixed batches of `batch_size` structures (at most `max_atoms` atoms per call)."""
    fitting = [k for k, n in enumerate(sizes) if n <= max_atoms]
    if not fitting:
        return []
    order = [int(k) for k in np.random.default_rng(seed).permutation(fitting)]
    singles = sorted(order[:4] + [max(fitting, key=lambda k: sizes[k]), min(fitting, key=lambda k: sizes[k])])
    batches = [[k] for k in dict.fromkeys(singles)]
    current: list[int] = []
    for k in order:
        if current and (len(current) == batch_size or sum(sizes[i] for i in current) + sizes[k] > max_atoms):
            batches.append(current)
            current = []
        current.append(k)
    return batches + ([current] if current else [])


@dataclass
class _Collected:
    energy_ref: list[float] = field(default_factory=list)
    energy_out: list[float] = field(default_factory=list)
    atoms: list[int] = field(default_factory=list)
    forces_ref: list[np.ndarray] = field(default_factory=list)
    forces_out: list[np.ndarray] = field(default_factory=list)
    virial_ref: list[np.ndarray] = field(default_factory=list)  # periodic structures, per atom
    virial_out: list[np.ndarray] = field(default_factory=list)

    def add(self, structures: Sequence[Structure], ref: Prediction, out: Prediction) -> None:
        for k, structure in enumerate(structures):
            n = len(structure)
            self.energy_ref.append(float(ref.energies[k]))
            self.energy_out.append(float(out.energies[k]))
            self.atoms.append(n)
            self.forces_ref.append(ref.forces_of(k))
            self.forces_out.append(out.forces_of(k))
            if structure.periodic:
                self.virial_ref.append(ref.virials[k] / n)
                self.virial_out.append(out.virials[k] / n)


def output_checks(c: _Collected, tol: Tolerances) -> list[OutputCheck]:
    """The per-output comparisons of everything collected."""
    n = np.array(c.atoms, dtype=np.float64)
    e_ref, e_out = np.array(c.energy_ref), np.array(c.energy_out)
    checks = [
        compare("energy", e_ref / n, e_out / n, tol.energy_per_atom_abs, allowance=4 * FLOAT32_ULP * np.abs(e_ref) / n,
                text=f"≤ {tol.energy_per_atom_abs:g} eV/atom + 4 ulp(E)"),
        compare("forces", np.concatenate(c.forces_ref), np.concatenate(c.forces_out), tol.forces_abs, tol.forces_rel,
                text=f"≤ {tol.forces_abs:g} eV/Å or rel RMSE ≤ {tol.forces_rel:g}"),
    ]
    if c.virial_ref:
        checks.append(compare("virial", np.stack(c.virial_ref), np.stack(c.virial_out), tol.virial_per_atom_abs,
                              text=f"≤ {tol.virial_per_atom_abs:g} eV/atom"))
    return checks


def refuse_nonfinite_reference(expected: Prediction, indices: Sequence[int], chosen: Sequence[Structure]) -> None:
    """The reference itself must be finite: otherwise the checkpoint is at fault, not the artifact."""
    for k, structure in enumerate(chosen):
        virial_ok = not structure.periodic or np.isfinite(expected.virials[k]).all()
        if not (np.isfinite(expected.energies[k]) and np.isfinite(expected.forces_of(k)).all() and virial_ok):
            raise UserInputError(f"it gives NaN or infinite energies or forces (eager, on "
                                 f"calibration structure {indices[k]}, {formula(structure.numbers)}) before any export "
                                 "is involved: its weights overflow float32 or are broken; retrain or fix it")


def check_parity(reference: Runner, candidate: Runner, structures: Sequence[Structure], tolerances: Tolerances,
                 cutoff: float, batch_size: int = 16, max_atoms: int = 10**9) -> ParityReport:
    """Compare `candidate` with `reference` on single and batched structures."""
    sizes = [len(s) for s in structures]
    batches = parity_batches(sizes, batch_size, max_atoms)
    collected = _Collected()
    for idx in batches:
        chosen = [structures[k] for k in idx]
        batch = neighbour_batch(chosen, cutoff)
        expected = reference.infer(batch)
        refuse_nonfinite_reference(expected, idx, chosen)
        collected.add(chosen, expected, candidate.infer(batch))
    with np.errstate(all="ignore"):  # a candidate's inf/NaN is reported by its check, not as a warning
        checks = output_checks(collected, tolerances) if batches else []
    fitting = sum(1 for n in sizes if n <= max_atoms)
    return ParityReport(passed=bool(checks) and all(c.passed for c in checks), structures=fitting,
                        batches=len(batches), checks=checks, skipped_too_large=len(sizes) - fitting)
