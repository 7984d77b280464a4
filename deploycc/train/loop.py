"""Distillation training: energy-per-atom + force loss, AdamW, warm-up + cosine, EMA, early stopping."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..batching import pad, pad_forces, size_batches
from ..checkpoint import file_sha256, save_checkpoint
from ..data.schema import Structures, read_h5
from ..errors import UserInputError
from ..model import ModelConfig, StudentModel, energy_and_forces
from ..periodic import periodic_batch, periodic_inputs
from ..versions import library_versions
from .normalisation import fit_element_references, fit_scale_shift


@dataclass
class TrainSettings:
    """Everything that decides a training run (stored in the checkpoint)."""

    epochs: int = 200
    batch_size: int = 16
    lr: float = 2e-3
    min_lr_ratio: float = 0.01
    weight_decay: float = 1e-5
    warmup_steps: int = 200
    energy_weight: float = 10.0
    force_weight: float = 1.0
    angular_weight: float = 0.0
    grad_clip: float = 10.0
    ema_decay: float = 0.995
    patience: int = 30
    max_minutes: float = 0.0
    seed: int = 0
    device: str = "cpu"


@dataclass
class Metrics:
    energy_mae_per_atom: float
    force_mae: float
    force_rmse: float
    structures: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class TrainResult:
    checkpoint: Path
    sha256: str
    epochs_run: int
    test: Metrics
    val: Metrics
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def _tensors(data: Structures, idx: np.ndarray, device: str, model: StudentModel) -> tuple[torch.Tensor, ...]:
    """numbers, positions, forces, energies (and cell, pbc, shifts for periodic models) of a batch."""
    numbers, positions = pad([data.numbers[i] for i in idx], [data.positions[i] for i in idx])
    forces = pad_forces([data.forces[i] for i in idx], numbers.shape[1])
    energies = torch.tensor(data.energies[idx], dtype=torch.float64)
    periodic: tuple[torch.Tensor, ...] = ()
    if model.periodic:
        cell, pbc = periodic_batch(data, idx) or (None, None)
        periodic = periodic_inputs(numbers, positions, cell, pbc, model.cutoff)[2:]
    elif data.pbc is not None and np.any(data.pbc[idx]):
        raise UserInputError("the dataset holds periodic structures; train a periodic model (e.g. --model metals-tiny)")
    tensors = (numbers, positions, forces, energies, *periodic)
    return tuple(t.to(device) for t in tensors)


def _loss(model: StudentModel, batch: tuple[torch.Tensor, ...], s: TrainSettings) -> torch.Tensor:
    numbers, positions, ref_forces, ref_energies, *periodic = batch
    energy, forces = energy_and_forces(model, numbers, positions, *periodic, create_graph=True)
    n_atoms = (numbers > 0).sum(1).to(energy.dtype)
    e_err = (energy.double() - ref_energies).float() / n_atoms
    mask = (numbers > 0).unsqueeze(-1).to(forces.dtype)
    f_err = (forces - ref_forces) * mask
    loss = s.energy_weight * (e_err**2).mean() + s.force_weight * (f_err**2).sum() / (3 * mask.sum())
    if s.angular_weight > 0:
        cos = torch.nn.functional.cosine_similarity(forces, ref_forces, dim=-1, eps=1e-6)
        loss = loss + s.angular_weight * ((1 - cos) * mask.squeeze(-1)).sum() / mask.sum()
    return loss


def evaluate(model: StudentModel, data: Structures, device: str = "cpu", batch_size: int = 64) -> Metrics:
    """Energy MAE per atom and force MAE/RMSE (per component) against the data's labels."""
    e_abs, f_abs, f_sq, n_comp = [], 0.0, 0.0, 0
    for idx in size_batches([len(z) for z in data.numbers], batch_size):
        numbers, positions, ref_f, ref_e, *periodic = _tensors(data, idx, device, model)
        energy, forces = energy_and_forces(model, numbers, positions, *periodic)
        n_atoms = (numbers > 0).sum(1).double()
        e_abs.append(((energy.double() - ref_e).abs() / n_atoms).cpu())
        mask = (numbers > 0).unsqueeze(-1)
        diff = ((forces - ref_f) * mask).double()
        f_abs += diff.abs().sum().item()
        f_sq += (diff**2).sum().item()
        n_comp += int(mask.sum().item()) * 3
    return Metrics(float(torch.cat(e_abs).mean()), f_abs / n_comp, math.sqrt(f_sq / n_comp), len(data))


class _EMA:
    """Exponential moving average of the parameters (evaluated and saved instead of the raw weights)."""

    def __init__(self, model: StudentModel, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def update(self, model: StudentModel) -> None:
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.dtype.is_floating_point:
                    self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
                else:
                    self.shadow[k].copy_(v)

    def copy_to(self, model: StudentModel) -> None:
        model.load_state_dict(self.shadow)


def _lr_factor(step: int, progress: float, s: TrainSettings) -> float:
    if step < s.warmup_steps:
        return (step + 1) / s.warmup_steps
    return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state")


def train(
    data_path: Path,
    config: ModelConfig,
    out: Path,
    settings: TrainSettings,
    resume: bool = False,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Distil a student on `data_path`'s train split; early-stop on val; report on test; save `out`."""
    data = read_h5(data_path)
    if not data.has_labels:
        raise UserInputError(f"dataset {data_path} has no energy/force labels")
    for name in ("train", "val", "test"):
        if len(data.splits.get(name, [])) == 0:
            raise UserInputError(f"dataset {data_path} has an empty '{name}' split")
    max_seen = max(int(z.max()) for z in data.numbers)
    if max_seen > config.max_z:
        raise UserInputError(f"dataset {data_path} has element Z={max_seen} above the model's max_z {config.max_z}")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    train_set, val_set, test_set = data.split("train"), data.split("val"), data.split("test")

    model = StudentModel(config)
    refs = fit_element_references(train_set, config.max_z)
    scale, shift = fit_scale_shift(train_set, refs)
    model.element_ref.copy_(torch.tensor(refs, dtype=torch.float32))
    model.scale.fill_(scale)
    model.shift.fill_(shift)
    model.to(settings.device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    ema = _EMA(model, settings.ema_decay)
    step, start_epoch, best_val, best_state, stale = 0, 0, math.inf, None, 0
    history: list[dict[str, float]] = []
    if resume and _state_path(out).is_file():
        state = torch.load(_state_path(out), map_location=settings.device, weights_only=True)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        ema.shadow = state["ema"]
        step, start_epoch, best_val, stale = state["step"], state["epoch"], state["best_val"], state["stale"]
        best_state, history = state["best_state"], state["history"]
        rng = np.random.default_rng(settings.seed + start_epoch)

    started = time.perf_counter()
    epoch = start_epoch
    sizes = [len(z) for z in train_set.numbers]
    for epoch in range(start_epoch, settings.epochs):
        model.train()
        losses = []
        for idx in size_batches(sizes, settings.batch_size, rng):
            elapsed = (time.perf_counter() - started) / 60.0
            progress = epoch / settings.epochs
            if settings.max_minutes > 0:
                progress = max(progress, elapsed / settings.max_minutes)
            for group in optimiser.param_groups:
                group["lr"] = settings.lr * _lr_factor(step, progress, settings)
            loss = _loss(model, _tensors(train_set, idx, settings.device, model), settings)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimiser.step()
            ema.update(model)
            losses.append(loss.item())
            step += 1
        raw_state = {k: v.clone() for k, v in model.state_dict().items()}
        ema.copy_to(model)
        model.eval()
        val = evaluate(model, val_set, settings.device)
        val_score = settings.energy_weight * val.energy_mae_per_atom + settings.force_weight * val.force_rmse
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_energy_mae": val.energy_mae_per_atom,
                  "val_force_rmse": val.force_rmse, "lr": optimiser.param_groups[0]["lr"],
                  "minutes": (time.perf_counter() - started) / 60.0}
        history.append(record)
        if val_score < best_val:
            best_val, stale = val_score, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        model.load_state_dict(raw_state)
        torch.save({"model": raw_state, "optimiser": optimiser.state_dict(), "ema": ema.shadow, "step": step,
                    "epoch": epoch + 1, "best_val": best_val, "stale": stale, "best_state": best_state,
                    "history": history}, _state_path(out))
        if on_epoch is not None:
            on_epoch(record)
        out_of_time = settings.max_minutes > 0 and record["minutes"] >= settings.max_minutes
        if stale >= settings.patience or out_of_time:
            break

    model.load_state_dict(best_state)
    model.eval()
    val = evaluate(model, val_set, settings.device)
    test = evaluate(model, test_set, settings.device)
    seconds = time.perf_counter() - started
    metadata: dict[str, Any] = {
        "dataset": str(data_path),
        "elements": sorted({int(z) for numbers in train_set.numbers for z in numbers}),  # for unseen-element checks
        "dataset_sha256": file_sha256(Path(data_path)),
        "teacher": str(data.attrs.get("teacher", "unknown")),
        "epochs": epoch + 1,
        "train_settings": asdict(settings),
        "test_metrics": test.as_dict(),
        "val_metrics": val.as_dict(),
        "train_minutes": seconds / 60.0,
        "library_versions": library_versions(),
    }
    model.cpu()
    sha = save_checkpoint(model, out, metadata)
    return TrainResult(out, sha, epoch + 1, test, val, seconds, history)
