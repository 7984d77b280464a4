"""Errors of a student against its teacher's labels, per element and per molecule, and a parity plot.

    python lab/student_report.py CHECKPOINT DATA.h5 [--split test] [--exclude 158,335] --out docs/students/NAME

writes NAME.json (overall, per element, per molecule) and NAME.png (predicted against reference forces and
energies per atom).  The molecules are the dataset's groups (one per molecule, as the splits are made).
`--exclude` adds the overall errors without those groups (e.g. the molecules lab/coverage_audit.py names, whose
atom environments no training molecule had before deploycc/data/coverage.txt) beside the full ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--exclude", default="", help="comma-separated group ids to report without, too")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from ase.data import chemical_symbols

    from deploycc.checkpoint import load_checkpoint
    from deploycc.data.schema import read_h5
    from deploycc.train.batches import Prepared, predict_batch, size_batches

    checkpoint = load_checkpoint(args.checkpoint)
    model = checkpoint.model.eval()
    data = read_h5(args.data)
    subset = data.split(args.split) if data.splits.get(args.split) is not None else data
    prepared = Prepared.of(subset, model.cutoff)
    energy_pred = np.zeros(len(subset))
    force_pred: list[np.ndarray] = [np.zeros(0)] * len(subset)
    for idx in size_batches(prepared.sizes(), 64):
        batch = prepared.batch(idx, "cpu")
        energies, _atoms, forces = predict_batch(model, batch, len(idx), create_graph=False)
        offsets = np.concatenate([[0], np.cumsum([len(subset.numbers[k]) for k in idx])])
        for row, k in enumerate(idx):
            energy_pred[k] = float(energies[row])
            force_pred[k] = forces[offsets[row]:offsets[row + 1]].detach().numpy()
    sizes = np.array([len(z) for z in subset.numbers])
    numbers = np.concatenate(subset.numbers)
    f_ref, f_out = np.concatenate(subset.forces), np.concatenate(force_pred)
    e_err = (energy_pred - subset.energies) / sizes
    by_element = {}
    for z in np.unique(numbers):
        diff = f_out[numbers == z] - f_ref[numbers == z]
        by_element[chemical_symbols[int(z)]] = {"atoms": int((numbers == z).sum()), "force_mae": float(np.abs(diff).mean()),
                                                "force_rmse": float(np.sqrt((diff**2).mean()))}
    group = subset.group if subset.group is not None else np.arange(len(subset))
    by_molecule = {}
    for g in np.unique(group):
        frames = np.flatnonzero(group == g)
        diff = np.concatenate([force_pred[k] - subset.forces[k] for k in frames])
        by_molecule[int(g)] = {"frames": len(frames), "energy_mae_per_atom": float(np.abs(e_err[frames]).mean()),
                               "force_rmse": float(np.sqrt((diff**2).mean()))}
    report = {"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split,
              **overall(np.arange(len(subset)), e_err, force_pred, subset.forces),
              "label_force_rms": float(np.sqrt((f_ref**2).mean())), "per_element": by_element,
              "per_molecule": by_molecule}
    if args.exclude:
        excluded = sorted({int(g) for g in args.exclude.split(",")})
        report["without_excluded"] = {"excluded_groups": excluded,
                                      "excluded_present": sorted(set(excluded) & {int(g) for g in group}),
                                      **overall(np.flatnonzero(~np.isin(group, excluded)), e_err, force_pred,
                                                subset.forces)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    # Energies less the student's per-element references: what is left is what the model learned.
    refs = model.element_ref.detach().numpy()
    baseline = np.array([refs[z].sum() for z in subset.numbers])
    plot(f_ref, f_out, (subset.energies - baseline) / sizes, (energy_pred - baseline) / sizes,
         args.out.with_suffix(".png"), report)
    worst = sorted(by_molecule.items(), key=lambda kv: -kv[1]["force_rmse"])[:5]
    print(json.dumps({k: v for k, v in report.items() if k != "per_molecule"}, indent=1))
    print("worst molecules (group: force RMSE):", ", ".join(f"{g}: {m['force_rmse']:.3f}" for g, m in worst))


def overall(frames: np.ndarray, e_err: np.ndarray, force_pred: list, force_ref: list) -> dict:
    """Energy MAE per atom and force MAE/RMSE over the given frames."""
    diff = np.concatenate([force_pred[k] - force_ref[k] for k in frames])
    return {"structures": len(frames), "energy_mae_per_atom": float(np.abs(e_err[frames]).mean()),
            "force_mae": float(np.abs(diff).mean()), "force_rmse": float(np.sqrt((diff**2).mean()))}


def plot(f_ref, f_out, e_ref, e_out, path: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    axes[0].scatter(f_ref.ravel(), f_out.ravel(), s=1, alpha=0.3)
    lim = float(np.abs(f_ref).max())
    axes[0].plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
    axes[0].set_xlabel("teacher force component (eV/Å)")
    axes[0].set_ylabel("student (eV/Å)")
    axes[0].set_title(f"forces: RMSE {report['force_rmse']:.3f}, MAE {report['force_mae']:.3f} eV/Å")
    axes[1].scatter(e_ref, e_out, s=4, alpha=0.5)
    lo, hi = float(min(e_ref.min(), e_out.min())), float(max(e_ref.max(), e_out.max()))
    axes[1].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    axes[1].set_xlabel("teacher energy less element references (eV/atom)")
    axes[1].set_ylabel("student (eV/atom)")
    axes[1].set_title(f"energy MAE {1000 * report['energy_mae_per_atom']:.1f} meV/atom")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
