"""Stress of a periodic deploycc model against EMT (the teacher of metals-tiny): stress errors on the fully
periodic frames of the shipped metals calibration set, and fcc lattice constants relaxed with stress + forces through ASE.
Usage: python scripts/check_stress.py [--model metals-tiny] (a preset, checkpoint or artifact folder)"""

from __future__ import annotations

import argparse

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS
from ase.stress import voigt_6_to_full_3x3_stress
from ase.units import GPa

from deploycc.api import load
from deploycc.ase import DeployccCalculator
from deploycc.data.schema import read_h5
from deploycc.paths import default_calib_file

METALS = ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")


def relaxed_lattice_constant(symbol: str, calc) -> tuple[float, float]:
    """Cubic lattice constant (A) after relaxing cell and positions, and the residual max |stress| (eV/A^3)."""
    atoms = bulk(symbol, "fcc", cubic=True)
    atoms.calc = calc
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-4, steps=300)
    return float(np.cbrt(atoms.get_volume())), float(np.abs(atoms.get_stress()).max())


def stress_errors(model: str, calib: str | None = None) -> str:
    """One line: stress and pressure errors (GPa) of `model` against EMT on the fully periodic calib frames."""
    calib = calib or str(default_calib_file(periodic=True))
    data = read_h5(calib)
    frames = [Atoms(numbers=data.numbers[k], positions=data.positions[k], cell=data.cells[k], pbc=True)
              for k in range(len(data)) if data.pbc is not None and data.pbc[k].all()]
    _, _, predicted = load(model).evaluate(frames)
    reference = []
    for atoms in frames:
        atoms.calc = EMT()
        reference.append(voigt_6_to_full_3x3_stress(atoms.get_stress()))
    reference = np.array(reference)
    error = (predicted - reference) / GPa
    pressure = lambda s: -np.trace(s, axis1=1, axis2=2) / 3 / GPa  # noqa: E731
    return (f"{len(frames)} fully periodic frames of {calib}: stress MAE {np.abs(error).mean():.2f} GPa, RMSE "
            f"{np.sqrt((error ** 2).mean()):.2f} GPa, max {np.abs(error).max():.2f} GPa (EMT stress RMS "
            f"{np.sqrt(((reference / GPa) ** 2).mean()):.2f} GPa); pressure MAE "
            f"{np.abs(pressure(predicted) - pressure(reference)).mean():.2f} GPa")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="metals-tiny")
    args = parser.parse_args()
    print(stress_errors(args.model), end="\n\n")
    student, teacher = DeployccCalculator(args.model), EMT()
    print(f"| metal | {args.model} a (Å) | EMT a (Å) | difference | residual stress (eV/Å³) |")
    print("|---|---:|---:|---:|---:|")
    for symbol in METALS:
        a_student, residual = relaxed_lattice_constant(symbol, student)
        a_teacher, _ = relaxed_lattice_constant(symbol, teacher)
        print(f"| {symbol} | {a_student:.4f} | {a_teacher:.4f} | {100 * (a_student / a_teacher - 1):+.2f}% | {residual:.1e} |")


if __name__ == "__main__":
    main()
