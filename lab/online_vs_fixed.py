"""Online distillation against a fixed dataset of equal teacher cost (issue 16), on this machine's CPUs.

Both students train for the same optimiser steps and batch size from the same teacher on the same training
molecules (the ANI-1x-eligible part of deploycc/data/molecules.txt, split by molecule), and are scored on the
same held-out frames.  The online run labels a fresh batch for every step; the fixed run labels, once, as
many frames as the online run's teacher labelled, with the same sampler (another seed stream), and trains
on them for as many epochs as it takes to make the same number of steps.

    DEPLOYCC_ANI_PYTHON=.venv-ani/bin/python OMP_NUM_THREADS=1 python lab/online_vs_fixed.py \
        {online,fixed} --steps 4000 --out docs/students; python lab/online_vs_fixed.py report --out docs/students

writes OUT/online-vs-fixed.json, .md and .png (learning curves against frames seen and teacher frames).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch


def held_out(teacher, pairs, config, seed: int, frames: int, path: Path):
    """The validation and test frames both runs are scored on (deterministic for a seed)."""
    from deploycc.data.schema import read_h5
    from deploycc.train.frames import fixed_split, split_molecules, write_splits

    if not path.is_file():
        molecules = split_molecules(pairs, seed)
        val = fixed_split(teacher, molecules["val"], frames, seed, 1, config.cutoff)
        test = fixed_split(teacher, molecules["test"], frames, seed, 2, config.cutoff)
        write_splits(val, test, path, teacher.name)
    return read_h5(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", choices=["online", "fixed", "report"])
    parser.add_argument("--teacher", default="ani1x")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--fixed-frames", type=int, default=8000, help="frames the fixed run labels once")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("work/online-vs-fixed"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.run == "report":
        report(args.out)
        return

    from deploycc.data.generate import molecules_for, read_smiles
    from deploycc.data.schema import Structures, write_h5
    from deploycc.data.teachers import get_teacher
    from deploycc.model import preset_config
    from deploycc.train.loop import TrainSettings, train
    from deploycc.train.online import (OnlineSettings, conformers_of, distil_online, labelled, molecule_file,
                                       rattled, split_molecules)

    args.out.mkdir(parents=True, exist_ok=True)
    teacher = get_teacher(args.teacher)
    pairs, _ = molecules_for(read_smiles(molecule_file()), teacher)
    config = preset_config(args.model)
    online = OnlineSettings(steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every, seed=args.seed)
    held = held_out(teacher, pairs, config, args.seed, online.eval_frames, args.out / "held-out.h5")
    curve: list[dict] = []
    started = time.perf_counter()

    def log(record: dict) -> None:
        curve.append(record)
        print(args.run, json.dumps(record), flush=True)

    if args.run == "online":
        result = distil_online(args.teacher, pairs, config, args.out / f"{args.model}-{args.teacher}-online.pt",
                               online, on_eval=log)
        summary = {"steps": result.steps, "frames_seen": result.frames_seen, "teacher_frames": result.teacher_frames,
                   "teacher_seconds": result.teacher_seconds, "test": result.test.as_dict(),
                   "val": result.val.as_dict()}
    else:
        pool = conformers_of(split_molecules(pairs, args.seed)["train"], online.conformers, args.seed + 17)
        rng = np.random.default_rng([args.seed, 2 * 10**6])
        batches = []
        while sum(len(f.energies) for f in batches) < args.fixed_frames:
            batches.append(labelled(teacher, rattled(pool, 256, rng), config.cutoff))
        n = args.fixed_frames
        pick = lambda name: sum((getattr(f, name) for f in batches), [])[:n]  # noqa: E731
        energies = np.concatenate([f.energies for f in batches])[:n]
        group = np.concatenate([f.group for f in batches])[:n]
        v = len(held)
        fixed = Structures(numbers=pick("numbers") + held.numbers, positions=pick("positions") + held.positions,
                           energies=np.concatenate([energies, held.energies]), forces=pick("forces") + held.forces,
                           cells=np.zeros((n + v, 3, 3)), pbc=np.zeros((n + v, 3), bool),
                           group=np.concatenate([group, held.group]),
                           splits={"train": np.arange(n), "val": n + held.splits["val"],
                                   "test": n + held.splits["test"]}, attrs={"teacher": args.teacher})
        write_h5(fixed, args.out / "fixed.h5")
        epochs = max(1, math.ceil(args.steps * args.batch_size / n))
        settings = TrainSettings(epochs=epochs, batch_size=args.batch_size, patience=10**6, seed=args.seed,
                                 warmup_steps=online.warmup_steps, min_lr_ratio=online.min_lr_ratio)
        steps_per_epoch = math.ceil(n / args.batch_size)
        trained = train(args.out / "fixed.h5", config, args.out / f"{args.model}-{args.teacher}-fixed.pt", settings,
                        on_epoch=lambda r: log({**r, "step": r["epoch"] * steps_per_epoch,
                                                "frames_seen": r["epoch"] * n, "teacher_frames": n}))
        summary = {"steps": trained.epochs_run * steps_per_epoch, "epochs": trained.epochs_run,
                   "frames_seen": trained.epochs_run * n, "teacher_frames": n,
                   "teacher_seconds": sum(f.teacher_seconds for f in batches), "test": trained.test.as_dict(),
                   "val": trained.val.as_dict()}
    summary.update(run=args.run, teacher=args.teacher, model=args.model, molecules=len(pairs),
                   batch_size=args.batch_size, minutes=(time.perf_counter() - started) / 60, curve=curve,
                   test_structures=len(held.splits["test"]))
    (args.out / f"{args.run}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "curve"}, indent=1))


def report(folder: Path) -> None:
    runs = {name: json.loads((folder / f"{name}.json").read_text()) for name in ("online", "fixed")
            if (folder / f"{name}.json").is_file()}
    write_markdown(runs, folder / "online-vs-fixed.md")
    plot({name: run["curve"] for name, run in runs.items()}, folder / "online-vs-fixed.png")
    print((folder / "online-vs-fixed.md").read_text())


def write_markdown(runs: dict, path: Path) -> None:
    rows = ["| run | frames labelled by the teacher | teacher seconds | frames seen | steps | minutes | test energy "
            "MAE (meV/atom) | test force MAE (eV/Å) | test force RMSE (eV/Å) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, run in runs.items():
        test = run["test"]
        rows.append(f"| {name} | {run['teacher_frames']} | {run['teacher_seconds']:.0f} | {run['frames_seen']} | "
                    f"{run['steps']} | {run['minutes']:.1f} | {1000 * test['energy_mae_per_atom']:.2f} | "
                    f"{test['force_mae']:.4f} | {test['force_rmse']:.4f} |")
    path.write_text("\n".join(rows) + "\n")


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, records in curves.items():
        if not records:
            continue
        seen = [r["frames_seen"] for r in records]
        cost = [r["teacher_frames"] for r in records]
        rmse = [r["val_force_rmse"] for r in records]
        axes[0].plot(seen, rmse, marker="o", label=name)
        axes[1].plot(cost, rmse, marker="o", label=name)
    axes[0].set_xlabel("frames seen by the optimiser")
    axes[1].set_xlabel("frames labelled by the teacher")
    for ax in axes:
        ax.set_ylabel("validation force RMSE (eV/Å)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
