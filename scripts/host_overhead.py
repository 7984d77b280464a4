"""Host-side cost of one call through the Python API and the ASE calculator, without the model.

The runner is replaced by one that returns zeros at once, so what is timed is validation, the neighbour list,
the pair vectors, the tensor round trip and ASE's bookkeeping: the part of an MD step that a faster backend
does not remove.  Usage: python scripts/host_overhead.py [--model tiny] [--molecule C6H6]
[--calls 2000]
"""

from __future__ import annotations

import argparse
import time

import ase.build
import torch

import deploycc.api as api
from deploycc.ase import DeployccCalculator
from deploycc.targets.base import GraphInputs, Runner


class InstantRunner(Runner):
    """Zeros of the right shapes, immediately (isolates everything around the runner)."""

    def infer_impl(self, inputs: GraphInputs):
        a = inputs.atoms
        return torch.zeros(a), torch.zeros(a, 3), torch.zeros(a, 3, 3)


def microseconds(call, calls: int) -> float:
    call()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--molecule", default="C6H6")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    predictor = api.load(args.model)
    predictor.runner = InstantRunner()
    atoms = ase.build.molecule(args.molecule)
    atoms.rattle(0.01, seed=0)
    atoms.calc = DeployccCalculator(predictor)
    skinned = atoms.copy()
    skinned.calc = DeployccCalculator(predictor, skin=0.5)

    def md_like_step(structure=atoms) -> None:  # positions change every step, as in MD
        structure.positions[0, 0] += 1e-6
        structure.get_forces()

    print(f"| path ({args.molecule}, {len(atoms)} atoms) | µs per call |\n|---|---:|")
    print(f"| Predictor.validate | {microseconds(lambda: predictor.validate([atoms]), args.calls):.1f} |")
    print(f"| Predictor.predict | {microseconds(lambda: predictor.predict([atoms]), args.calls):.1f} |")
    print(f"| ASE get_forces after a position change | {microseconds(md_like_step, args.calls):.1f} |")
    print(f"| the same with a 0.5 Å Verlet skin | {microseconds(lambda: md_like_step(skinned), args.calls):.1f} |")


if __name__ == "__main__":
    main()
