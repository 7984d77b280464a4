"""Interleaved A/B timing of two ONNX graphs on ONNX Runtime CPU: same inputs, alternating rounds, medians.

Run-to-run speed on a shared 2-core VM moves by ~30%, so two separate bench runs cannot resolve a 10-30%
change; alternating the two graphs within one process can.  Random CHNO-like molecules of 25 atoms padded to 28.
Usage: python scripts/ab_onnx.py OLD.onnx NEW.onnx [--threads 2] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort


def session(path: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-sizes", default="1,8,32,128")
    args = parser.parse_args()
    sessions = [session(args.old, args.threads), session(args.new, args.threads)]
    rng = np.random.default_rng(0)
    print("| batch | old ms/molecule | new ms/molecule | speed-up |\n|---:|---:|---:|---:|")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        numbers = np.full((batch, 28), 6, np.int64)
        numbers[:, :10], numbers[:, 25:] = 1, 0
        feeds = {"numbers": numbers, "positions": (rng.normal(size=(batch, 28, 3)) * 1.6).astype(np.float32)}
        times: list[list[float]] = [[], []]
        for s in sessions:
            for _ in range(3):
                s.run(None, feeds)
        for _ in range(args.rounds):
            for k, s in enumerate(sessions):
                calls = max(3, 64 // batch)
                start = time.perf_counter()
                for _ in range(calls):
                    s.run(None, feeds)
                times[k].append((time.perf_counter() - start) / calls / batch * 1e3)
        old, new = statistics.median(times[0]), statistics.median(times[1])
        print(f"| {batch} | {old:.3f} | {new:.3f} | {old / new:.2f}× |")


if __name__ == "__main__":
    main()
