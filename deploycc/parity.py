"""Numerical parity of an artifact's runner against the eager model, per output, with tolerances."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .batching import pad
from .periodic import pad_cells
from .targets.settings import Tolerances

# (numbers, positions, cell, pbc) -> (energy, forces[, virial]); cell and pbc are None for molecules.
# A runner's `evaluate` (virial None for molecular artifacts) or `predict` (no stress) both fit.
Predict = Callable[..., tuple]


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


@dataclass
class _Collected:
    energy_ref: list[float] = field(default_factory=list)
    energy_out: list[float] = field(default_factory=list)
    n_atoms: list[int] = field(default_factory=list)
    forces_ref: list[np.ndarray] = field(default_factory=list)
    forces_out: list[np.ndarray] = field(default_factory=list)
    padded_forces: list[np.ndarray] = field(default_factory=list)
    virial_ref: list[np.ndarray] = field(default_factory=list)  # periodic structures, when both give a virial
    virial_out: list[np.ndarray] = field(default_factory=list)
    batches: int = 0


def parity_batches(sizes: Sequence[int], batch_size: int, max_atoms: int, seed: int = 0) -> list[list[int]]:
    """Batches that exercise the dynamic axes: singles (batch 1), then mixed-size padded batches."""
    fitting = [k for k, n in enumerate(sizes) if n <= max_atoms]
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(fitting))
    singles = sorted(order[:4] + [max(fitting, key=lambda k: sizes[k]), min(fitting, key=lambda k: sizes[k])])
    batches = [[k] for k in dict.fromkeys(singles)]
    batches += [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return batches


def _collect(reference: Predict, candidate: Predict, numbers, positions, batches, cells=None, pbc=None
             ) -> _Collected:
    out = _Collected()
    periodic = pbc is not None and bool(np.any(pbc))
    for idx in batches:
        z, r = pad([numbers[k] for k in idx], [positions[k] for k in idx])
        extra = pad_cells([cells[k] for k in idx], [pbc[k] for k in idx], len(idx),
                          names=[f"structure {k}" for k in idx]) if periodic else ()
        e_ref, f_ref, w_ref = _numpy(reference(z, r, *extra))
        e_out, f_out, w_out = _numpy(candidate(z, r, *extra))
        out.batches += 1
        for row, k in enumerate(idx):
            n = len(numbers[k])
            if w_ref is not None and w_out is not None and pbc is not None and np.any(pbc[k]):
                out.virial_ref.append(w_ref[row] / n)
                out.virial_out.append(w_out[row] / n)
            out.energy_ref.append(float(e_ref[row]))
            out.energy_out.append(float(e_out[row]))
            out.n_atoms.append(n)
            out.forces_ref.append(f_ref[row, :n])
            out.forces_out.append(f_out[row, :n])
            out.padded_forces.append(f_out[row, n:])
    return out


def _numpy(outputs: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(energy, forces, virial or None) as float32 arrays from a 2- or 3-tuple of tensors."""
    arrays = [None if t is None else t.detach().float().cpu().numpy() for t in outputs]
    return arrays[0], arrays[1], (arrays[2] if len(arrays) > 2 else None)


FLOAT32_ULP = 2.0**-23  # relative spacing of float32 numbers


def _energy_check(c: _Collected, tol: Tolerances) -> OutputCheck:
    """Per-atom energy error against the tolerance plus 4 float32 ulps of the total energy (the rounding
    floor of any float32 artifact: a -4000 eV molecule cannot be resolved below ~5e-4 eV)."""
    ref, out, n = np.array(c.energy_ref), np.array(c.energy_out), np.array(c.n_atoms)
    nan = bool(~np.isfinite(out).all())
    diff = np.abs(out - ref) / n
    allowed = tol.energy_per_atom_abs + 4 * FLOAT32_ULP * np.abs(ref) / n
    max_abs = float(np.nanmax(diff)) if len(diff) else 0.0
    rel = float(np.sqrt(np.mean((out - ref) ** 2)) / max(np.sqrt(np.mean(ref**2)), 1e-12))
    passed = not nan and bool(np.all(diff <= allowed))
    text = f"≤ {tol.energy_per_atom_abs:g} eV/atom + 4 ulp(E)"
    return OutputCheck("energy", max_abs, rel, text, passed, nan)


def _forces_check(c: _Collected, tol: Tolerances) -> OutputCheck:
    ref, out = np.concatenate(c.forces_ref), np.concatenate(c.forces_out)
    nan = bool(~np.isfinite(out).all())
    diff = np.abs(out - ref)
    max_abs = float(np.nanmax(diff)) if diff.size else 0.0
    rel = float(np.sqrt(np.mean(diff**2)) / max(np.sqrt(np.mean(ref**2)), 1e-12))
    passed = not nan and (max_abs <= tol.forces_abs or rel <= tol.forces_rel)
    text = f"≤ {tol.forces_abs:g} eV/Å or rel RMSE ≤ {tol.forces_rel:g}"
    return OutputCheck("forces", max_abs, rel, text, passed, nan)


def _virial_check(c: _Collected, tol: Tolerances) -> OutputCheck:
    """Virial per atom (eV/atom), so that one tolerance fits any cell size."""
    ref, out = np.stack(c.virial_ref), np.stack(c.virial_out)
    nan = bool(~np.isfinite(out).all())
    diff = np.abs(out - ref)
    max_abs = float(np.nanmax(diff))
    rel = float(np.sqrt(np.mean(diff**2)) / max(np.sqrt(np.mean(ref**2)), 1e-12))
    passed = not nan and max_abs <= tol.virial_per_atom_abs
    return OutputCheck("virial", max_abs, rel, f"≤ {tol.virial_per_atom_abs:g} eV/atom", passed, nan)


def _padding_check(c: _Collected, tol: Tolerances) -> OutputCheck:
    padded = np.concatenate([p.reshape(-1, 3) for p in c.padded_forces]) if c.padded_forces else np.zeros((0, 3))
    nan = bool(~np.isfinite(padded).all())
    max_abs = float(np.nanmax(np.abs(padded))) if padded.size else 0.0
    passed = not nan and max_abs <= tol.forces_abs
    return OutputCheck("padded forces", max_abs, 0.0, f"= 0 (≤ {tol.forces_abs:g} eV/Å)", passed, nan)


def check_parity(
    reference: Predict,
    candidate: Predict,
    numbers: Sequence[np.ndarray],
    positions: Sequence[np.ndarray],
    tolerances: Tolerances,
    batch_size: int = 16,
    max_atoms: int = 10**9,
    cells: Sequence[np.ndarray] | None = None,
    pbc: Sequence[np.ndarray] | None = None,
) -> ParityReport:
    """Compare `candidate` with `reference` on single and padded batches of the given structures
    (periodic ones too, when `cells` and `pbc` are given)."""
    sizes = [len(z) for z in numbers]
    batches = parity_batches(sizes, batch_size, max_atoms)
    collected = _collect(reference, candidate, numbers, positions, batches, cells, pbc)
    checks = [_energy_check(collected, tolerances), _forces_check(collected, tolerances)]
    if collected.virial_ref:
        checks.append(_virial_check(collected, tolerances))
    checks.append(_padding_check(collected, tolerances))
    return ParityReport(
        passed=all(c.passed for c in checks),
        structures=sum(1 for n in sizes if n <= max_atoms),
        batches=collected.batches,
        checks=checks,
        skipped_too_large=sum(1 for n in sizes if n > max_atoms),
    )
