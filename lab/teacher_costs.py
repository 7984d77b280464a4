"""Cost per frame of the molecular teachers (docs/teachers.md): median of 5 rattled frames after a warm-up,
alone and (for teachers that batch) in one call of 64.  `OMP_NUM_THREADS=1 python lab/teacher_costs.py`."""

from __future__ import annotations

import sys
import time

import numpy as np

from deploycc.data.generate import embed
from deploycc.data.teachers import get_teacher
from deploycc.errors import MissingDependencyError

MOLECULES = {"ethanol": "CCO", "aspirin": "CC(=O)Oc1ccccc1C(=O)O", "caffeine": "Cn1cnc2c1c(=O)n(C)c(=O)n2C"}


def frames(smiles: str, count: int) -> list:
    atoms = embed(smiles, 0)
    rng = np.random.default_rng(0)
    out = [atoms.copy() for _ in range(count)]
    for frame in out:
        frame.positions += rng.normal(0.0, 0.05, frame.positions.shape)
    return out


def main(names: list[str]) -> None:
    for name in names:
        teacher = get_teacher(name)
        try:
            teacher.label(frames("CCO", 1))
        except MissingDependencyError as exc:
            print(f"{name}: not available ({exc})")
            continue
        for label, smiles in MOLECULES.items():
            batch = frames(smiles, 64)
            times = []
            for frame in batch[:5]:
                started = time.perf_counter()
                teacher.label([frame])
                times.append(time.perf_counter() - started)
            line = f"{name:8s} {label:9s} {len(batch[0]):3d} atoms  alone {1e3 * float(np.median(times)):7.2f} ms"
            if teacher.label_batch is not None:
                started = time.perf_counter()
                teacher.label(batch)
                line += f"  batch of 64 {1e3 * (time.perf_counter() - started) / 64:6.2f} ms/frame"
            print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["xtb", "ani1x", "emt"])
