"""Learning curves of online-distilled students: validation force RMSE and energy MAE against frames seen and
against teacher seconds, over the stages of a warm-restarted student (each stage's history, offset by the
stages before it):

    python lab/learning_curves.py --out docs/students/tiny-ani1x-curves.png \
        tiny-ani1x=work/ovf/tiny-ani1x-online.pt,work/preset/tiny-ani1x.pt,work/md1/tiny-ani1x-md.pt,deploycc/presets/tiny-ani1x.pt

Each argument is NAME=STAGE[,STAGE...] in stage order; a stage is a checkpoint, or the log `deploycc distil` printed
(a `.log` file, e.g. docs/students/tiny-xtb-stage2-distil.log), so curves of stages whose checkpoints are gone can
be redrawn from the committed logs.  A stage's validation set is its own (stages
that add teacher-MD or normal-mode frames validate on them too), so a step between stages is a change of
yardstick, marked by a vertical line; within a stage the curve is comparable.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

EVAL_LINE = re.compile(r"^step\s+\d+\s+frames\s+(\d+)\s+teacher\s+([\d.]+) s\s+val E ([\d.]+) meV/atom\s+"
                       r"F mae [\d.]+\s+rmse ([\d.]+) eV/Å")
END_LINE = re.compile(r"^steps \d+, (\d+) frames seen \(each once\), teacher \d+ frames in ([\d.]+) s")


def stage_record(path: str) -> tuple[list[dict], float, float]:
    """A stage's validation history, frames seen and teacher seconds, from its checkpoint or its distil log."""
    if path.endswith(".log"):
        return log_record(Path(path).read_text())
    from deploycc.checkpoint import load_checkpoint

    meta = load_checkpoint(path).metadata
    history = meta.get("history") or []
    if not history:
        raise SystemExit(f"{path}: no online history (not made by deploycc distil)")
    return history, meta["frames_seen"], meta["teacher_seconds"]


def log_record(text: str) -> tuple[list[dict], float, float]:
    """The history of the evaluation lines of a distil log, and its closing line's totals."""
    history, totals = [], None
    for line in text.splitlines():
        if match := EVAL_LINE.match(line):
            frames, seconds, energy, force = map(float, match.groups())
            history.append({"frames_seen": frames, "teacher_seconds": seconds, "val_force_rmse": force,
                            "val_energy_mae": energy / 1000})
        elif match := END_LINE.match(line):
            totals = float(match.group(1)), float(match.group(2))
    if not history or totals is None:
        raise SystemExit("a distil log needs its evaluation lines and its closing 'steps …' line")
    return history, *totals


def stages_curve(paths: list[str]) -> tuple[list[dict], list[float]]:
    """The stages' histories end to end (frames and teacher seconds cumulative), and where each stage starts."""
    points, starts = [], []
    seen = seconds = 0.0
    for path in paths:
        history, frames_seen, teacher_seconds = stage_record(path)
        starts.append(seen)
        for record in history:
            points.append({"frames_seen": seen + record["frames_seen"],
                           "teacher_seconds": seconds + record["teacher_seconds"],
                           "val_force_rmse": record["val_force_rmse"], "val_energy_mae": record["val_energy_mae"]})
        seen += frames_seen
        seconds += teacher_seconds
    return points, starts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME=CHECKPOINT[,CHECKPOINT...]")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for run in args.runs:
        name, _, paths = run.partition("=")
        points, starts = stages_curve(paths.split(","))
        seen = [p["frames_seen"] for p in points]
        line, = axes[0].plot(seen, [p["val_force_rmse"] for p in points], marker=".", label=name)
        axes[1].plot([p["teacher_seconds"] for p in points], [p["val_force_rmse"] for p in points], marker=".",
                     color=line.get_color(), label=name)
        axes[2].plot(seen, [1000 * p["val_energy_mae"] for p in points], marker=".", color=line.get_color(),
                     label=name)
        for start in starts[1:]:
            axes[0].axvline(start, color=line.get_color(), alpha=0.3, linestyle="--")
            axes[2].axvline(start, color=line.get_color(), alpha=0.3, linestyle="--")
        last = points[-1]
        print(f"{name}: {len(starts)} stages, {last['frames_seen']:.0f} frames, {last['teacher_seconds']:.0f} teacher s, "
              f"last val force RMSE {last['val_force_rmse']:.3f} eV/Å, energy MAE {1000 * last['val_energy_mae']:.2f} "
              "meV/atom")
    axes[0].set_xlabel("frames seen (each once)")
    axes[1].set_xlabel("teacher seconds")
    axes[2].set_xlabel("frames seen (each once)")
    axes[0].set_ylabel("validation force RMSE (eV/Å)")
    axes[1].set_ylabel("validation force RMSE (eV/Å)")
    axes[2].set_ylabel("validation energy MAE (meV/atom)")
    from matplotlib.ticker import NullFormatter

    for ax in axes:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a log axis overlap
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
