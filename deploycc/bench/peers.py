"""Peer force fields measured on the same structures as deploycc, for `deploycc scale --peer ani1x`.

ANI-1x: the 8-network ensemble that the torchani 2.2.4 wheel ships, built from its files by the loader the
ANI-1x teacher uses (deploycc/data/ani_worker.py); nothing is written into site-packages.  Energy + forces
(autograd), H C N O only; torchani 2.2.4 imports `pkg_resources` (setuptools < 70).

This file imports nothing from deploycc, so it runs under any interpreter that has torch, torchani and ase
(`--peer-python`): `python peers.py --structures a.extxyz ... --result out.json`.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

# The ANI-1x loader is deploycc/data/ani_worker.py's (also free of deploycc imports), loaded by path so that
# this file still runs as a plain script under the peer's interpreter.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from ani_worker import ELEMENTS, ani1x  # noqa: E402

ANI_ELEMENTS = set(ELEMENTS)


def energy_forces(model, atoms):
    import torch

    species = torch.tensor(atoms.numbers, dtype=torch.long).unsqueeze(0)
    coordinates = torch.tensor(atoms.positions, dtype=torch.float32).unsqueeze(0).requires_grad_(True)
    if atoms.pbc.any():
        cell = torch.tensor(atoms.cell.array, dtype=torch.float32)
        pbc = torch.tensor(atoms.pbc, dtype=torch.bool)
        energy = model((species, coordinates), cell=cell, pbc=pbc).energies
    else:
        energy = model((species, coordinates)).energies
    (grad,) = torch.autograd.grad(energy.sum(), coordinates)
    return float(energy), -grad[0]


def measure(model, atoms, repeats: int, budget: float) -> dict:
    """Median seconds of energy + forces over `repeats` calls after one warm-up (fewer when over budget)."""
    started = time.perf_counter()
    energy_forces(model, atoms)
    times = []
    while len(times) < repeats and (not times or time.perf_counter() - started < budget):
        t0 = time.perf_counter()
        energy_forces(model, atoms)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_s": times[len(times) // 2], "calls": len(times),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def substitute(atoms, rule: str) -> str:
    """Replace elements for timing only (e.g. "S=O": sulfur as oxygen); returns what was replaced."""
    from ase.data import atomic_numbers

    done = []
    for pair in filter(None, rule.split(",")):
        old, new = (atomic_numbers[x.strip()] for x in pair.split("="))
        count = int((atoms.numbers == old).sum())
        if count:
            atoms.numbers[atoms.numbers == old] = new
            done.append(f"{count} {pair.strip()}")
    return ", ".join(done)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--structures", nargs="+", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per structure, at most")
    parser.add_argument("--substitute", default="S=O", help="elements replaced for timing only (a=b,c=d)")
    parser.add_argument("--periodic", action="store_true",
                        help="also periodic structures (torchani 2.2.4 lists periodic pairs over all atoms: O(N^2))")
    args = parser.parse_args(argv)
    import ase.io
    import torch
    import torchani

    torch.set_num_threads(args.threads)
    model = ani1x()
    rows = []
    for path in args.structures:
        atoms = ase.io.read(path)
        row = {"structure": path, "atoms": len(atoms), "periodic": bool(atoms.pbc.any()),
               "peer": "ANI-1x (torchani %s, 8 networks)" % torchani.__version__}
        replaced = substitute(atoms, args.substitute)
        if replaced:
            row["substituted"] = replaced
        if not set(atoms.numbers.tolist()) <= ANI_ELEMENTS:
            row["skipped"] = "ANI-1x covers H C N O only"
        elif atoms.pbc.any() and not args.periodic:
            row["skipped"] = "periodic: torchani 2.2.4's periodic pair list is all-pairs (--periodic to run it)"
        else:
            row.update(measure(model, atoms, args.repeats, args.budget))
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.result).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
