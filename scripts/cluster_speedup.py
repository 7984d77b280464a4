"""Speed-up of Dask workers over one process for `predict` and for teacher labelling on this machine.

    python scripts/cluster_speedup.py [--molecules 20000] [--smiles 148] [--teacher xtb] [--artifact PATH]

Times (wall, including starting the local cluster) the serial run, `local:1` and `local:2`, each twice,
interleaved, and prints a markdown table with the best of each.  Run it once as is and once with
OMP_NUM_THREADS=1 (the serial run's threads; local workers always get their share of the cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ase.io
import torch
import numpy as np
from ase.build import molecule

from deploycc.api import load
from deploycc.data.generate import read_smiles
from deploycc.data.generate import generate_molecules
from deploycc.data.teachers import get_teacher
from deploycc.runtime.cluster import dask_client, parse_cluster
from deploycc.runtime.predict import Distributed, predict_file

NAMES = ("CH3CH2OH", "C6H6", "CH3COOH", "H2O", "CH4", "HCOOH", "CH3NO2", "C2H4", "CH3CN", "NH3")


def structures_file(count: int, folder: Path) -> Path:
    rng = np.random.default_rng(0)
    atoms = []
    for k in range(count):
        a = molecule(NAMES[k % len(NAMES)])
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        atoms.append(a)
    path = folder / "screen.extxyz"
    ase.io.write(path, atoms)
    return path


def time_predict(source: str, path: Path, folder: Path, cluster: str | None, chunk: int) -> float:
    predictor = load(source)
    distributed = None if cluster is None else Distributed(parse_cluster(cluster), source)
    start = time.perf_counter()
    predict_file(predictor, path, folder / f"out-{cluster}.extxyz", chunk_size=chunk, distributed=distributed)
    return time.perf_counter() - start


def time_label(smiles: list, teacher: str, cluster: str | None) -> float:
    start = time.perf_counter()
    generate_molecules(smiles, get_teacher(teacher), rattles=8, md_frames=2, seed=0,
                       cluster=None if cluster is None else parse_cluster(cluster))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--molecules", type=int, default=20000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--smiles", type=int, default=148)
    parser.add_argument("--teacher", default="xtb")
    parser.add_argument("--artifact", default="artifacts/tiny/onnx")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    modes = [None, "local:1", "local:2"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = structures_file(args.molecules, folder)
        smiles = read_smiles()[: args.smiles]
        predict = {m: [] for m in modes}
        label = {m: [] for m in modes}
        for _round in range(args.rounds):
            for mode in modes:
                predict[mode].append(time_predict(args.artifact, path, folder, mode, args.chunk))
                label[mode].append(time_label(smiles, args.teacher, mode))
    start = time.perf_counter()
    with dask_client(parse_cluster("local:2")):
        pass
    print(f"starting and stopping local:2 took {time.perf_counter() - start:.1f} s")
    print(f"| run | predict {args.molecules} molecules ({args.artifact}) | label {args.smiles} molecules "
          f"({args.teacher}, 10 frames each) |")
    print("|---|---:|---:|")
    base_p, base_l = min(predict[None]), min(label[None])
    for mode in modes:
        p, l = min(predict[mode]), min(label[mode])
        print(f"| {mode or f'serial ({torch.get_num_threads()} threads)'} | {p:.1f} s ({base_p / p:.2f}×) | {l:.1f} s ({base_l / l:.2f}×) |")


if __name__ == "__main__":
    main()
