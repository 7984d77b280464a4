"""Why a torch teacher labelled slower on Dask workers than in plain processes: the same `data metals` labelling,
timed in spawned processes and on Dask LocalCluster workers, with and without MALLOC_TRIM_THRESHOLD_.

    OMP_NUM_THREADS=1 python lab/dask_overhead.py [--teacher sevennet] [--workers 2] [--alloys 6]

Dask's nanny starts each worker with MALLOC_TRIM_THRESHOLD_=65536 (`distributed.nanny.pre-spawn-environ`).
Setting that variable at all switches off glibc's adaptive mmap threshold, so every allocation above 128 KiB
(most of a message-passing teacher's tensors) becomes a fresh mmap, its page faults and a munmap.  deploycc's
`--cluster local:N` unsets it (runtime/cluster.py); this script times the four combinations on one dataset.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


MODES = ("processes", "processes-trim", "dask-default", "dask-deploycc")
LABELS = {"processes": "spawned processes (--workers)",
          "processes-trim": "spawned processes, MALLOC_TRIM_THRESHOLD_=65536",
          "dask-default": "Dask LocalCluster as Dask starts it",
          "dask-deploycc": "Dask as --cluster local:N starts it (threshold unset)"}


def run_mode(mode: str, teacher_name: str, workers: int, alloys: int) -> None:
    """Label the dataset once in `mode` and print the seconds it took (this process does nothing else)."""
    from distributed import Client, LocalCluster

    from deploycc.data.metals import MetalsSettings, generate_metals
    from deploycc.data.teachers import get_teacher
    from deploycc.runtime.cluster import ClusterSpec

    teacher = get_teacher(teacher_name)
    settings = MetalsSettings(bulk=2, alloys=alloys, vacancies=2, slabs=2, clusters=2, rattles=2, md_frames=2,
                              max_atoms=48, seed=5)
    start = time.perf_counter()
    if mode.startswith("processes"):
        if mode == "processes-trim":
            os.environ["MALLOC_TRIM_THRESHOLD_"] = "65536"  # inherited by the processes spawned next
        data, _ = generate_metals(teacher, settings, workers=workers)
    elif mode == "dask-default":
        with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            data, _ = generate_metals(teacher, settings, cluster=client)
    else:
        data, _ = generate_metals(teacher, settings, cluster=ClusterSpec(workers=workers))
    print(f"{LABELS[mode]:56s} {time.perf_counter() - start:7.1f} s  ({len(data.energies)} frames)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="sevennet")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--alloys", type=int, default=6)
    parser.add_argument("--mode", choices=MODES, help="one mode in this process (the default runs each in its own)")
    args = parser.parse_args()
    if args.mode:
        run_mode(args.mode, args.teacher, args.workers, args.alloys)
        return
    import dask
    import distributed  # noqa: F401  (loads its configuration defaults)

    print(f"{os.cpu_count()} cores, {args.workers} workers, teacher {args.teacher}; Dask's pre-spawn environment: "
          f"{dask.config.get('distributed.nanny.pre-spawn-environ')}", flush=True)
    for mode in MODES:  # a fresh process each: no mode runs beside another's leftovers
        subprocess.run([sys.executable, __file__, "--mode", mode, "--teacher", args.teacher, "--workers",
                        str(args.workers), "--alloys", str(args.alloys)], check=True)


if __name__ == "__main__":
    main()
