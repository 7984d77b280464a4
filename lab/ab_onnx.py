"""Interleaved A/B timing of ONNX graphs (or session settings) on ONNX Runtime CPU: same inputs, alternating
rounds, medians.

Run-to-run speed on a shared 2-core VM moves by ~30%, so two separate bench runs cannot resolve a 10-30%
change; alternating within one process can.  Workloads: `mols:B` (B calibration molecules of ~25 atoms in
one call) and any system spec of deploycc/bench/systems.py (water:N, copper:N, file:PATH, ...).
Each variant is PATH or PATH@option+option (options: noarena, basic, same).
Usage: python lab/ab_onnx.py A.onnx B.onnx@noarena --systems mols:32,water:3000 [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort

from deploycc.bench.systems import system
from deploycc.bench.workload import load_workload
from deploycc.paths import default_calib_file
from deploycc.runtime.neighbours import Structure, neighbour_batch


def session(variant: str, threads: int) -> ort.InferenceSession:
    path, _, flags = variant.partition("@")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    for flag in filter(None, flags.split("+")):
        if flag == "noarena":
            options.enable_cpu_mem_arena = False
        elif flag == "basic":
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        elif flag == "nopattern":
            options.enable_mem_pattern = False
        elif flag == "same":
            options.add_session_config_entry("session.arena_extend_strategy", "kSameAsRequested")
        else:
            raise SystemExit(f"unknown option {flag}")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def feeds_of(spec: str) -> tuple[dict, int]:
    if spec.startswith("mols:"):
        structures = load_workload(25, default_calib_file()).structures[: int(spec[5:])]
    else:
        structures = [Structure.from_atoms(system(spec))]
    batch = neighbour_batch(structures, 5.0)
    return ({"numbers": batch.numbers, "vectors": batch.vectors().astype(np.float32), "neighbours": batch.neighbours,
             "reverse": batch.reverse}, batch.atoms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--systems", default="mols:1,mols:32,water:3000")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sessions = [session(v, args.threads) for v in args.variants]
    print("| workload | atoms | " + " | ".join(f"{v} µs/atom" for v in args.variants) + " |")
    print("|---|---:|" + "---:|" * len(sessions))
    for spec in args.systems.split(","):
        feeds, atoms = feeds_of(spec)
        for s in sessions:
            for _ in range(2):
                s.run(None, feeds)
        times: list[list[float]] = [[] for _ in sessions]
        calls = max(1, int(20000 / atoms))
        for _ in range(args.rounds):
            for k, s in enumerate(sessions):
                start = time.perf_counter()
                for _ in range(calls):
                    s.run(None, feeds)
                times[k].append((time.perf_counter() - start) / calls / atoms * 1e6)
        print(f"| {spec} | {atoms} | " + " | ".join(f"{statistics.median(t):.1f}" for t in times) + " |", flush=True)


if __name__ == "__main__":
    main()
