"""Where an ONNX artifact spends its time on ONNX Runtime CPU: share per operator type and the slowest nodes.

Usage: python lab/profile_onnx.py artifacts/tiny/onnx/model.onnx [--batch 32] [--atoms 28] [--threads 2]
Random CHNO-like molecules (10 H, the rest C); ORT's own profiler (kernel time per node), after warm-up."""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--atoms", type=int, default=28)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    numbers = np.full((args.batch, args.atoms), 6, np.int64)
    numbers[:, : min(10, args.atoms)] = 1
    feeds = {"numbers": numbers, "positions": (rng.normal(size=(args.batch, args.atoms, 3)) * 1.6).astype(np.float32)}
    for _ in range(5):
        session.run(None, feeds)
    start = time.perf_counter()
    for _ in range(args.iterations):
        session.run(None, feeds)
    seconds = (time.perf_counter() - start) / args.iterations
    events = json.load(open(session.end_profiling()))

    by_op, by_node, shapes = collections.Counter(), collections.Counter(), {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
            by_node[event["name"][: -len("_kernel_time")]] += event["dur"]
            shapes[event["name"][: -len("_kernel_time")]] = event["args"].get("input_type_shape")
    total = sum(by_op.values())
    calls = args.iterations + 5
    print(f"{args.model}: batch {args.batch} x {args.atoms} atoms, {args.threads} threads: "
          f"{seconds * 1e3:.2f} ms per call, {seconds / args.batch * 1e3:.3f} ms per structure, "
          f"{len(by_node)} nodes")
    print("| op | share | nodes |\n|---|---:|---:|")
    nodes_per_op = collections.Counter(name_op for name_op in
                                       (e["args"]["op_name"] for e in events if e.get("cat") == "Node"
                                        and e["name"].endswith("_kernel_time")))
    for op, duration in by_op.most_common(args.top):
        print(f"| {op} | {duration / total:.1%} | {nodes_per_op[op] // calls} |")
    print("\nslowest nodes:")
    for name, duration in by_node.most_common(args.top):
        print(f"  {duration / total:5.1%}  {name[:50]:50s} {shapes[name]}")


if __name__ == "__main__":
    main()
