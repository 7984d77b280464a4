"""Interleaved A/B of the removed dense layout against the neighbour layout on batches of ~25-atom molecules.

The dense ONNX artifact comes from the last commit before the switch (52c69cb); build it with that tree:
    git worktree add /tmp/oldtree 52c69cb && cd /tmp/oldtree && PYTHONPATH=$PWD python -c \\
      "from deploycc.pipeline import build; build('tiny', 'onnx', out_root='/tmp/oldart')"
then: python lab/ab_dense_sparse.py /tmp/oldart/tiny/onnx/model.onnx artifacts/tiny/onnx/model.onnx
Per batch size: the model calls of each (median over interleaved rounds; the sparse batch in calls of at most
`--chunk-atoms` atoms, as the onnx runner does), and the host preparation (dense: padding to the batch's
widest molecule; sparse: the vesin lists, slot matrices and vectors).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort

from deploycc.bench.workload import load_workload
from deploycc.paths import default_calib_file
from deploycc.runtime.neighbours import neighbour_batch


def session(path: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def dense_feeds(structures) -> dict:
    width = max(len(s) for s in structures)
    numbers = np.zeros((len(structures), width), np.int64)
    positions = np.zeros((len(structures), width, 3), np.float32)
    for k, s in enumerate(structures):
        numbers[k, : len(s)] = s.numbers
        positions[k, : len(s)] = s.positions
    return {"numbers": numbers, "positions": positions}


def sparse_feeds(structures, chunk_atoms: int = 0) -> list[dict]:
    batch = neighbour_batch(structures, 5.0)
    parts = batch.split(chunk_atoms) if chunk_atoms > 0 else [batch]
    return [{"numbers": p.numbers, "vectors": p.vectors().astype(np.float32), "neighbours": p.neighbours,
             "reverse": p.reverse} for p in parts]


def timed(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dense")
    parser.add_argument("sparse")
    parser.add_argument("--batch-sizes", default="1,8,32,128")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-atoms", type=int, default=256)
    args = parser.parse_args()
    molecules = load_workload(25, default_calib_file()).structures
    dense, sparse = session(args.dense, args.threads), session(args.sparse, args.threads)
    print("| batch | dense ms/molecule | sparse ms/molecule | sparse / dense | dense prep ms | sparse prep ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for b in (int(x) for x in args.batch_sizes.split(",")):
        chosen = [molecules[k % len(molecules)] for k in range(b)]
        dense_feed, sparse_parts = dense_feeds(chosen), sparse_feeds(chosen, args.chunk_atoms)
        calls = max(2, 64 // b)
        runs = (lambda: dense.run(None, dense_feed), lambda: [sparse.run(None, f) for f in sparse_parts])
        times: list[list[float]] = [[], []]
        for run in runs:
            run()
        for _ in range(args.rounds):
            for k, run in enumerate(runs):
                times[k].append(timed(run, calls) / b * 1e3)
        prep = [timed(lambda: dense_feeds(chosen), 20) * 1e3,
                timed(lambda: sparse_feeds(chosen, args.chunk_atoms), 20) * 1e3]
        d, s = statistics.median(times[0]), statistics.median(times[1])
        print(f"| {b} | {d:.3f} | {s:.3f} | {s / d:.2f} | {prep[0]:.2f} | {prep[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
