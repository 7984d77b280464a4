"""Steps per second of aspirin NVE (0.5 fs, 300 K) with deploycc forces in OpenMM (openmmml's ASE potential) and
LAMMPS (fix external pf/callback), next to the bare Predictor call; docs/engines/{openmm,lammps}.md quote it.

    OMP_NUM_THREADS=1 .venv/bin/python lab/engines_speed.py \
        --source tiny --source artifacts/tiny/onnx --steps 300 --repeat 5

Each figure is the best of --repeat timed runs of --steps steps (the machine is shared: the best run is the one
least disturbed by other jobs).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ase.io import read

from deploycc.api import load

ASPIRIN = Path(__file__).resolve().parent.parent / "docs" / "md" / "aspirin.xyz"


def best_rate(advance, steps: int, repeat: int) -> float:
    """Steps per second of the fastest of `repeat` calls of advance(steps)."""
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        advance(steps)
        best = max(best, steps / (time.perf_counter() - start))
    return best


def bare(predictor, atoms, steps: int, repeat: int) -> float:
    """Predictor.predict calls per second on the same structure (the model plus deploycc's checks)."""
    predictor.predict([atoms])
    return best_rate(lambda n: [predictor.predict([atoms]) for _ in range(n)], steps, repeat)


def openmm_rate(predictor, atoms, steps: int, repeat: int, platform: str) -> float:
    from openmm import unit

    from deploycc.engines.openmm import simulation

    sim = simulation(atoms, predictor, timestep_fs=0.5, platform=platform)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    sim.step(20)
    return best_rate(sim.step, steps, repeat)


def lammps_rate(predictor, atoms, steps: int, repeat: int) -> float:
    from deploycc.engines.lammps import create_lammps

    with create_lammps(atoms, predictor, timestep_fs=0.5) as coupling:
        coupling.lmp.commands_list(["velocity all create 300 1 mom yes rot yes dist gaussian", "fix nve all nve",
                                    "thermo 0"])
        coupling.run(20)
        return best_rate(coupling.run, steps, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", help="artifact, checkpoint or preset (repeatable)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    atoms = read(ASPIRIN)
    print("| source | Predictor calls/s | OpenMM Reference steps/s | OpenMM CPU steps/s | LAMMPS steps/s |")
    print("|---|---:|---:|---:|---:|")
    for source in args.source or ["tiny"]:
        predictor = load(source)
        run = (args.steps, args.repeat)
        rates = [bare(predictor, atoms, *run), openmm_rate(predictor, atoms, *run, "Reference"),
                 openmm_rate(predictor, atoms, *run, "CPU"), lammps_rate(predictor, atoms, *run)]
        print(f"| {source} ({predictor.label}) | " + " | ".join(f"{r:.0f}" for r in rates) + " |")


if __name__ == "__main__":
    main()
