"""Online distillation: worker processes make and label new configurations while the student trains, so it
never sees the same frame twice.

Molecules are split train/val/test by molecule.  Each worker embeds conformers of the training molecules
once (RDKit), then makes batches ahead of the optimiser: random conformers rattled by a Gaussian whose
width is drawn per frame and, as asked, normal-mode samples (data/normal_modes.py) and teacher-MD frames
(walkers.py), labelled by the teacher in batched calls, with their neighbour lists.  Batch k of worker w is
seeded by (seed, w, k) and the trainer takes the workers' batches in turn, so a run is the same
for a seed and a worker count (with --max-minutes the schedule follows the clock instead).  Validation and
test frames (held-out molecules, same sampler, own seeds) are labelled once at the start; the EMA weights are
scored on them every `eval_every` steps against frames seen and teacher cost (frames handed to the teacher,
teacher seconds), which is what the learning curves plot.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..checkpoint import save_checkpoint
from ..data.clusters import is_cluster
from ..errors import UserInputError
from ..model import ModelConfig, StudentModel
from ..versions import library_versions
from .batches import Metrics, Prepared, distillation_loss, evaluate
from .frames import (Frames, add_train_only, box_pool, box_split, check_boxes, conformers_of,  # noqa: F401
                     fixed_split, joined, labelled, nms_split, rattled, split_molecules, thermal, thermal_split,
                     write_splits)
from .label_pool import PooledTeacher
from .labellers import Labellers
from .loop import EMA, initial_model, retarget_references, warm_start
from .online_settings import OnlineSettings

def molecule_file() -> Path:
    """The shipped molecule list: the enumerated one (deploycc/data/molecules.txt) when present."""
    from ..data.generate import SMILES_FILE

    enumerated = SMILES_FILE.with_name("molecules.txt")
    return enumerated if enumerated.is_file() else SMILES_FILE


MAX_EMPTY_BATCHES = 20  # consecutive batches without one labelled frame: the teacher is failing, not unlucky


@dataclass
class OnlineResult:
    checkpoint: Path
    sha256: str
    steps: int
    frames_seen: int
    teacher_frames: int
    teacher_seconds: float
    test: Metrics
    val: Metrics
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    test_md: Metrics | None = None  # the test molecules' teacher-MD frames


# --- the run -----------------------------------------------------------------------------------------------


def _lr(step: int, s: OnlineSettings, progress: float) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def held_out_teacher(teacher: Any, workers: int) -> Any:
    """What labels the held-out frames: the teacher itself, or, for one that labels a frame at a time, the
    teacher in as many processes as the run will have labelling workers (they start after)."""
    if teacher.label_batch is None and workers > 1:
        return PooledTeacher(teacher.name, workers)
    return nullcontext(teacher)


def held_out(teacher: Any, molecules: dict[str, list[tuple[int, str]]], s: OnlineSettings, cutoff: float
             ) -> tuple[Frames, Frames, Frames]:
    """Validation, test and test-MD frames of the held-out molecules, each kind on its own seed stream."""
    val = fixed_split(teacher, molecules["val"], s.eval_frames, s.seed, 1, cutoff)
    test = fixed_split(teacher, molecules["test"], s.eval_frames, s.seed, 2, cutoff)
    test_md = thermal_split(teacher, molecules["test"], s.eval_frames, s.seed, 3, cutoff)
    if s.thermal_count():  # validate on what is trained on: the best weights are chosen on every kind of frame
        val = joined([val, thermal_split(teacher, molecules["val"], s.eval_frames, s.seed, 4, cutoff)])
    if s.nms_count():
        val = joined([val, nms_split(teacher, molecules["val"], s.eval_frames, s.seed, 5, cutoff)])
    if s.box_every:
        val = joined([val, box_split(teacher, molecules["val"], s.eval_frames, s.seed, 6, cutoff)])
    return val, test, test_md


def distil_online(teacher_name: str, smiles: Sequence[tuple[str, str]], config: ModelConfig, out: Path,
                  settings: OnlineSettings, on_eval: Callable[[dict[str, float]], None] | None = None,
                  splits_out: Path | None = None, train_only: Sequence[tuple[str, str]] = ()) -> OnlineResult:
    """Train a student on a stream of freshly labelled frames; save the best EMA weights (by validation).
    `train_only` molecules join the training split only (the split of `smiles` stays as it was)."""
    from ..data.teachers import get_teacher

    settings.check()
    s = settings
    torch.manual_seed(s.seed)
    teacher = get_teacher(teacher_name)
    molecules = split_molecules(smiles, s.seed)
    add_train_only(molecules, train_only, len(smiles))
    if not molecules.get("train") or not molecules.get("val") or not molecules.get("test"):
        raise UserInputError(f"online distillation needs molecules for train, val and test; got {len(smiles)}")
    check_boxes(teacher, molecules["train"], s.box_every)
    start = warm_start(s.init, config, s.device).model if s.init else None  # a bad --init: one line, before any work
    cutoff = config.cutoff
    with held_out_teacher(teacher, s.workers) as labeller:
        val, test, test_md = held_out(labeller, molecules, s, cutoff)
    for name, frames in (("validation", val), ("test", test)):
        if len(frames.energies) == 0:
            raise UserInputError(f"teacher '{teacher_name}' labelled none of the {name} frames (no molecule embedded, "
                                 "or every frame failed): give more molecules, or another teacher")
    if splits_out is not None:
        write_splits(val, test, splits_out, teacher_name, test_md)
    started = time.perf_counter()
    labellers = Labellers(teacher_name, molecules["train"], s, cutoff)
    try:
        counts = (len(smiles), sum(is_cluster(smi) for smi, _ in smiles), len(train_only))  # and clusters among them
        return _run(labellers, teacher_name, config, out, s, (val, test, test_md), started, on_eval, counts, start)
    finally:
        labellers.close()


def _run(labellers: Labellers, teacher_name: str, config: ModelConfig, out: Path, s: OnlineSettings,
         held_out: tuple[Frames, Frames, Frames], started: float, on_eval: Callable | None,
         molecule_count: tuple[int, int, int],
         start: StudentModel | None) -> OnlineResult:
    val, test, test_md = held_out
    first = [f for f in (labellers.next() for _ in range(min(8, s.steps))) if len(f.energies)]  # fit, then trained on
    if not first:
        raise UserInputError(f"teacher '{teacher_name}' labelled none of the first training frames")
    fit = joined(first)
    model = _starting_model(config, fit, s, start)
    optimiser = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    ema = EMA(model, s.ema_decay)
    compiled = _compiled(model) if s.compile else None
    val_prep, test_prep = val.prepared(), test.prepared()
    history: list[dict[str, float]] = []
    best, best_state = math.inf, None
    frames_seen = teacher_frames = empty = box_frames = 0
    teacher_seconds = 0.0
    step = 0
    while step < s.steps:
        batch = first.pop(0) if first else labellers.next()
        teacher_frames += batch.attempted
        teacher_seconds += batch.teacher_seconds
        empty = empty + 1 if len(batch.energies) == 0 else 0
        if empty >= MAX_EMPTY_BATCHES:
            raise UserInputError(f"teacher '{teacher_name}' labelled none of the last {empty} batches: it is failing")
        elapsed = (time.perf_counter() - started) / 60.0
        if empty:
            continue
        progress = max(step / s.steps, elapsed / s.max_minutes if s.max_minutes > 0 else 0.0)
        loss = _step(model, optimiser, ema, batch, s, _lr(step, s, progress), compiled)
        frames_seen += len(batch.energies)
        box_frames += batch.periodic_count()
        step += 1
        last = step == s.steps or (s.max_minutes > 0 and elapsed >= s.max_minutes)
        if step % s.eval_every == 0 or last:
            record, score, state = _score(model, ema, val_prep, s, step, frames_seen, teacher_frames,
                                          teacher_seconds, float(loss.item()), started)
            history.append(record)
            if score < best:
                best, best_state = score, state
            if on_eval is not None:
                on_eval(record)
        if last:
            break
    if best_state is None:
        raise UserInputError("training diverged: the validation errors were NaN at every evaluation; lower --lr")
    model.load_state_dict(best_state)
    model.eval()
    val_metrics, test_metrics = evaluate(model, val_prep, s.device), evaluate(model, test_prep, s.device)
    md_metrics = evaluate(model, test_md.prepared(), s.device) if len(test_md.energies) else None
    seconds = time.perf_counter() - started
    metadata = _metadata(teacher_name, molecule_count, (val, test, fit), s, history, seconds)
    metadata.update({"frames_seen": frames_seen, "box_frames": box_frames, "teacher_frames": teacher_frames,
                     "teacher_seconds": teacher_seconds,
                     "test_metrics": test_metrics.as_dict(), "val_metrics": val_metrics.as_dict(),
                     "test_md_metrics": md_metrics.as_dict() if md_metrics else None})
    sha = save_checkpoint(model.cpu(), out, metadata)
    return OnlineResult(out, sha, step, frames_seen, teacher_frames, teacher_seconds, test_metrics, val_metrics,
                        seconds, history, md_metrics)


def _starting_model(config: ModelConfig, fit: Frames, s: OnlineSettings, start: StudentModel | None
                    ) -> StudentModel:
    """The warm start (its element references refitted for a new teacher), else a fresh student fitted on `fit`."""
    if start is None:
        return _first_model(config, fit, s.device)
    return retarget_references(start, fit.structures(), s.device) if s.new_teacher else start


def _first_model(config: ModelConfig, fit: Frames, device: str) -> StudentModel:
    """A fresh student fitted on the first batches.  The fit takes compositions and energies; boxes among those
    batches do not make the student a periodic preset (config.periodic: parity's default calibration set),
    whatever the worker count."""
    fit_set = fit.structures()
    fit_set.pbc = np.zeros_like(fit_set.pbc)
    return initial_model(config, fit_set, device)


def _metadata(teacher_name: str, molecule_count: tuple[int, int, int], frames: Sequence[Frames], s: OnlineSettings,
              history: list[dict[str, float]], seconds: float) -> dict[str, Any]:
    """What the checkpoint says of the run besides its results."""
    return {"teacher": teacher_name, "online": True, "molecules": molecule_count[0], "clusters": molecule_count[1],
            "train_only_molecules": molecule_count[2],
            "elements": sorted({int(z) for f in frames for numbers in f.numbers for z in numbers}),
            "online_settings": asdict(s), "history": history, "train_minutes": seconds / 60.0,
            "library_versions": library_versions()}


def _compiled(model: StudentModel) -> Any:
    from .compiled import CompiledEnergyGrad

    return CompiledEnergyGrad(model)


def _step(model: StudentModel, optimiser: torch.optim.Optimizer, ema: EMA, batch: Frames, s: OnlineSettings,
          lr: float, compiled: Any = None) -> torch.Tensor:
    """One optimiser step on one fresh batch; returns its loss."""
    for group in optimiser.param_groups:
        group["lr"] = lr
    model.train()
    prepared = batch.prepared()
    idx = np.arange(len(prepared))
    loss = distillation_loss(model, prepared.batch(idx, s.device), len(idx), s.energy_weight, s.force_weight,
                             compiled=compiled)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
    optimiser.step()
    ema.update(model)
    return loss


def _score(model: StudentModel, ema: EMA, val: Prepared, s: OnlineSettings, step: int, frames_seen: int,
           teacher_frames: int, teacher_seconds: float, loss: float, started: float
           ) -> tuple[dict[str, float], float, dict[str, torch.Tensor]]:
    """The EMA weights on the validation frames: the record, its score and the EMA state."""
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    ema.copy_to(model)
    model.eval()
    metrics = evaluate(model, val, s.device)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(raw)
    record = {"step": step, "frames_seen": frames_seen, "teacher_frames": teacher_frames,
              "teacher_seconds": teacher_seconds, "loss": loss, "val_energy_mae": metrics.energy_mae_per_atom,
              "val_force_mae": metrics.force_mae, "val_force_rmse": metrics.force_rmse,
              "minutes": (time.perf_counter() - started) / 60.0}
    return record, s.energy_weight * metrics.energy_mae_per_atom + s.force_weight * metrics.force_rmse, state
