"""One benchmark process: open one artifact, sweep batch sizes, write a JSON result.

Started by `deploycc.bench.driver.run_bench` as `python -m deploycc.bench.worker --artifact FOLDER ... --result
FILE` so that every target is measured with its own allocator and thread pools.  Progress goes to stdout, one
line per batch size and mode; the result file holds {"records": [...], "notices": [...], "info": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deploycc.bench.worker", description=__doc__)
    parser.add_argument("--artifact", required=True, help="built artifact folder")
    parser.add_argument("--result", required=True, help="JSON file to write")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64,128,256")
    parser.add_argument("--atoms", type=int, default=25)
    parser.add_argument("--min-iters", type=int, default=50)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--structures", required=True, help="workload structures")
    parser.add_argument("--modes", default=None, help="comma-separated: host, device (default: all for the device)")
    return parser.parse_args(argv)


def set_threads(threads: int) -> None:
    """Thread pools for every library a runner may use; the environment first, before they start."""
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[key] = str(threads)
    import torch

    torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)

    import torch

    from ..artifact.open import open_artifact
    from ..errors import DeployccError
    from .measure import MeasureSettings, measure_runner
    from .workload import load_workload

    try:
        opened = open_artifact(Path(args.artifact), args.device, extra={"threads": args.threads})
        workload = load_workload(args.atoms, Path(args.structures), args.seed)
    except DeployccError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    measure = MeasureSettings(warmup=args.warmup, min_iters=args.min_iters, min_seconds=args.min_seconds,
                              pool=args.pool, seed=args.seed)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    modes = [m.strip() for m in args.modes.split(",")] if args.modes else None
    records, notices = measure_runner(
        opened.runner, opened.manifest.target, workload, batch_sizes, args.device,
        float(opened.manifest.model_config["cutoff"]), measure, modes, max_atoms=opened.settings.atoms.max,
        on_event=lambda message: print(message, flush=True))
    info = {"pid": os.getpid(), "target": opened.manifest.target, "artifact": str(opened.folder),
            "torch_threads": torch.get_num_threads(), "ort_intra_op_threads": getattr(opened.runner, "threads", None),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "gpu": torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else None,
            "settings_device": opened.settings.device, "precision": opened.settings.precision}
    payload = {"records": [r.to_dict() for r in records], "notices": notices, "info": info}
    Path(args.result).write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
