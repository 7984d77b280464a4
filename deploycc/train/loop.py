"""Distillation training: energy-per-atom + force loss, AdamW, warm-up + cosine, EMA, early stopping, resume."""

from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch

from ..checkpoint import Checkpoint, file_sha256, load_checkpoint, save_checkpoint
from ..data.schema import Structures, read_h5
from ..errors import UserInputError
from ..model import ModelConfig, StudentModel
from ..versions import library_versions
from . import distributed
from .batches import Metrics, Prepared, distillation_loss, evaluate, predict_batch, size_batches
from .distributed import Context
from .normalisation import fit_element_references, fit_scale_shift

__all__ = ["TrainSettings", "TrainResult", "Metrics", "train", "evaluate"]


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
    compile: bool = False  # energies and their gradient from one torch.compile'd function (train/compiled.py)
    init: str | None = None  # start from this checkpoint's weights (same architecture): a warm restart

    def check(self) -> None:
        """Refuse settings outside their domain (one line)."""
        check_domain(self, at_least_one=("epochs", "batch_size", "patience"), positive=("lr", "ema_decay"),
                     non_negative=("energy_weight", "force_weight", "angular_weight", "max_minutes", "weight_decay"))


def check_domain(settings: Any, at_least_one: tuple[str, ...] = (), positive: tuple[str, ...] = (),
                 non_negative: tuple[str, ...] = ()) -> None:
    """One line for the first field of `settings` outside its domain, named as its command-line option."""
    option = lambda name: f"--{name.replace('_', '-')}"  # noqa: E731
    for name in at_least_one:
        if int(getattr(settings, name)) < 1:
            raise UserInputError(f"{option(name)} must be at least 1, got {getattr(settings, name)}")
    for name in positive:
        value = float(getattr(settings, name))
        if not (math.isfinite(value) and value > 0):
            raise UserInputError(f"{option(name)} must be a positive number, got {value}")
    for name in non_negative:
        value = float(getattr(settings, name))
        if not (math.isfinite(value) and value >= 0):
            raise UserInputError(f"{option(name)} must be a non-negative number, got {value}")


@dataclass
class TrainResult:
    checkpoint: Path
    sha256: str
    epochs_run: int
    test: Metrics
    val: Metrics
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


class EMA:
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


def load_dataset(data_path: Path, config: ModelConfig) -> Structures:
    """The labelled dataset, refused when unlabelled, missing a split or holding elements above max_z."""
    data = read_h5(data_path)
    if not data.has_labels:
        raise UserInputError(f"dataset {data_path} has no energy/force labels")
    for name in ("train", "val", "test"):
        if len(data.splits.get(name, [])) == 0:
            raise UserInputError(f"dataset {data_path} has an empty '{name}' split")
    max_seen = max(int(z.max()) for z in data.numbers)
    if max_seen > config.max_z:
        raise UserInputError(f"dataset {data_path} has element Z={max_seen} above the model's max_z {config.max_z}")
    return data


def training_config(config: ModelConfig, train_set: Structures) -> ModelConfig:
    """`config`, marked periodic when the training split holds periodic cells (recorded in the checkpoint:
    parity then defaults to the periodic calibration set)."""
    if train_set.pbc is not None and np.any(train_set.pbc) and not config.periodic:
        return replace(config, periodic=True)
    return config


def initial_model(config: ModelConfig, train_set: Structures, device: str) -> StudentModel:
    """A fresh student with element references, scale and shift fitted on the training split."""
    model = StudentModel(training_config(config, train_set))
    refs = fit_element_references(train_set, config.max_z)
    scale, shift = fit_scale_shift(train_set, refs)
    model.element_ref.copy_(torch.tensor(refs, dtype=torch.float32))
    model.scale.fill_(scale)
    model.shift.fill_(shift)
    return model.to(device)


def warm_start(source: str, config: ModelConfig, device: str, train_set: Structures | None = None) -> Checkpoint:
    """Checkpoint `source`, its model on `device`, whose architecture must be `config`'s (a molecular student
    may go on to periodic data: it is then marked periodic, as `training_config` would); refused when
    `train_set` holds elements the checkpoint never trained on (their reference energies were never fitted)."""
    checkpoint = load_checkpoint(source)
    if replace(checkpoint.config, periodic=config.periodic) != config:
        raise UserInputError(f"--init {source} is a {checkpoint.config} model, not the {config} being trained")
    known = checkpoint.elements
    if train_set is not None and known is not None:
        unseen = sorted({int(z) for numbers in train_set.numbers for z in numbers} - set(known))
        if unseen:
            raise UserInputError(f"--init {source} never trained on element(s) Z={unseen} of this dataset; "
                                 "train from scratch instead")
    if config.periodic and not checkpoint.model.config.periodic:
        checkpoint.model.config = config
    checkpoint.model.to(device)
    return checkpoint


def retarget_references(model: StudentModel, fit_set: Structures, device: str) -> StudentModel:
    """A student warm-started for another teacher: its element references are corrected by least squares on
    the teacher's energies minus its own, so its learned interactions, scale and shift carry over unchanged.
    Only elements in `fit_set` are corrected: the references are buffers that training never moves."""
    prepared = Prepared.of(fit_set, model.cutoff)
    own = np.zeros(len(fit_set))
    for idx in size_batches(prepared.sizes(), 64):
        energy, _, _ = predict_batch(model, prepared.batch(idx, device), len(idx), create_graph=False)
        own[idx] = energy.detach().double().cpu().numpy()
    residual = Structures(numbers=fit_set.numbers, positions=fit_set.positions, energies=fit_set.energies - own)
    correction = fit_element_references(residual, model.config.max_z)
    with torch.no_grad():
        model.element_ref += torch.tensor(correction, dtype=model.element_ref.dtype, device=model.element_ref.device)
    return model


@dataclass
class _Run:
    """The state of a run that a resume restores."""

    model: StudentModel
    optimiser: torch.optim.Optimizer
    ema: EMA
    step: int = 0
    epoch: int = 0
    best_val: float = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    stale: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    init_sha256: str | None = None  # the checkpoint a warm restart began from (not resume state)

    def save(self, path: Path, raw_state: dict[str, torch.Tensor]) -> None:
        torch.save({"model": raw_state, "optimiser": self.optimiser.state_dict(), "ema": self.ema.shadow,
                    "step": self.step, "epoch": self.epoch, "best_val": self.best_val, "stale": self.stale,
                    "best_state": self.best_state, "history": self.history}, path)

    def restore(self, path: Path | BinaryIO, device: str) -> None:
        state = torch.load(path, map_location=device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.ema.shadow = state["ema"]
        self.step, self.epoch, self.best_val, self.stale = state["step"], state["epoch"], state["best_val"], state["stale"]
        self.best_state, self.history = state["best_state"], state["history"]


def _train_epoch(run: _Run, prepared: Prepared, s: TrainSettings, rng: np.random.Generator, started: float,
                 ctx: Context, compiled: Any = None) -> float:
    """One pass over the training split; returns the mean loss.  Under a launcher each step is one global
    batch of world x batch_size structures, shared out across the ranks."""
    run.model.train()
    losses, clock = [], 0.0  # clock: rank 0's seconds at the last step, so that all ranks set the same lr
    for idx in size_batches(prepared.sizes(), s.batch_size * ctx.world, rng):
        progress = run.epoch / s.epochs
        if s.max_minutes > 0:
            elapsed = clock if ctx.active else time.perf_counter() - started
            progress = max(progress, elapsed / 60.0 / s.max_minutes)
        for group in run.optimiser.param_groups:
            group["lr"] = s.lr * _lr_factor(run.step, progress, s)
        if ctx.active:
            run.optimiser.zero_grad(set_to_none=True)
            weights = (s.energy_weight, s.force_weight, s.angular_weight)
            value, clock = distributed.shard_gradients(run.model, prepared, idx, weights, ctx,
                                                       time.perf_counter() - started)
        else:
            loss = distillation_loss(run.model, prepared.batch(idx, s.device), len(idx), s.energy_weight,
                                     s.force_weight, s.angular_weight, compiled=compiled)
            run.optimiser.zero_grad(set_to_none=True)
            loss.backward()
            value = loss.item()
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), s.grad_clip)
        run.optimiser.step()
        run.ema.update(run.model)
        losses.append(value)
        run.step += 1
    return float(np.mean(losses))


def _validate_epoch(run: _Run, val: Prepared, s: TrainSettings, loss: float, started: float, ctx: Context
                    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Score the EMA weights on the validation split, keep the best, return the epoch's record."""
    raw_state = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.ema.copy_to(run.model)
    run.model.eval()
    metrics = distributed.evaluate_reduced(run.model, val, ctx)
    score = s.energy_weight * metrics.energy_mae_per_atom + s.force_weight * metrics.force_rmse
    record = {"epoch": run.epoch + 1, "loss": loss, "val_energy_mae": metrics.energy_mae_per_atom,
              "val_force_rmse": metrics.force_rmse, "lr": run.optimiser.param_groups[0]["lr"],
              "minutes": (time.perf_counter() - started) / 60.0}
    run.history.append(record)
    if score < run.best_val:
        run.best_val, run.stale = score, 0
        run.best_state = {k: v.clone() for k, v in run.model.state_dict().items()}
    else:
        run.stale += 1
    run.model.load_state_dict(raw_state)
    run.epoch += 1
    return record, raw_state


def train(data_path: Path, config: ModelConfig, out: Path, settings: TrainSettings, resume: bool = False,
          on_epoch: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Distil a student on `data_path`'s train split; early-stop on val; report on test; save `out`.

    Under `torchrun` (WORLD_SIZE > 1) the ranks train data-parallel; rank 0 alone writes files and calls
    `on_epoch`, and every rank returns the same result (docs/distributed-training.md)."""
    settings.check()
    data = load_dataset(data_path, config)
    with distributed.session(settings.device) as ctx:
        return _train_in(ctx, data, data_path, config, out, settings, resume, on_epoch)


def _train_in(ctx: Context, data: Structures, data_path: Path, config: ModelConfig, out: Path,
              settings: TrainSettings, resume: bool, on_epoch: Callable[[dict[str, float]], None] | None
              ) -> TrainResult:
    """`train` once the process knows its rank (world 1 outside a launcher) and device."""
    s = replace(settings, device=ctx.device)  # cuda -> cuda:LOCAL_RANK; `settings` is what is recorded
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    train_set, val_set, test_set = data.split("train"), data.split("val"), data.split("test")
    start = warm_start(s.init, training_config(config, train_set), s.device, train_set) if s.init else None
    model = start.model if start is not None else initial_model(config, train_set, s.device)
    distributed.sync_model(model, ctx)
    optimiser = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    run = _Run(model, optimiser, EMA(model, s.ema_decay), init_sha256=start.sha256 if start is not None else None)
    compiled = _compiled(model, s, ctx)
    if resume and _restore(run, _state_path(out), ctx):
        rng = np.random.default_rng(s.seed + run.epoch)
    started = time.perf_counter()
    train_prep, val_prep = Prepared.of(train_set, model.cutoff), Prepared.of(val_set, model.cutoff)
    while run.epoch < s.epochs:
        loss = _train_epoch(run, train_prep, s, rng, started, ctx, compiled)
        record, raw_state = _validate_epoch(run, val_prep, s, loss, started, ctx)
        if ctx.is_main:
            run.save(_state_path(out), raw_state)
            if on_epoch is not None:
                on_epoch(record)
        ctx.barrier()  # the other ranks wait for rank 0's state file
        stop = run.stale >= s.patience or (s.max_minutes > 0 and record["minutes"] >= s.max_minutes)
        if distributed.agree(stop, ctx):
            break
    return _finish(run, data, data_path, train_set, val_prep, test_set, out, settings, started, ctx)


def _compiled(model: StudentModel, s: TrainSettings, ctx: Context) -> Any:
    """The compiled energy-and-gradient function of `model` with --compile (one process only), else None."""
    if not s.compile:
        return None
    if ctx.active:
        raise UserInputError("--compile trains in one process: leave it out under torchrun")
    from .compiled import CompiledEnergyGrad

    return CompiledEnergyGrad(model)


def _restore(run: _Run, path: Path, ctx: Context) -> bool:
    """Load the saved state if there is one (under a launcher: rank 0's file, sent to every rank)."""
    if not ctx.active:
        if not path.is_file():
            return False
        run.restore(path, ctx.device)
        return True
    state = distributed.read_on_main(path, ctx)
    if state is not None:
        run.restore(io.BytesIO(state), ctx.device)
    return state is not None


def _finish(run: _Run, data: Structures, data_path: Path, train_set: Structures, val: Prepared,
            test_set: Structures, out: Path, settings: TrainSettings, started: float, ctx: Context
            ) -> TrainResult:
    """Evaluate the best weights on val and test and save the checkpoint with its metadata (rank 0)."""
    model = run.model
    model.load_state_dict(run.best_state)
    model.eval()
    val_metrics = distributed.evaluate_reduced(model, val, ctx)
    test_metrics = distributed.evaluate_reduced(model, test_set, ctx)
    seconds = time.perf_counter() - started
    metadata: dict[str, Any] = {
        "dataset": str(data_path),
        "elements": sorted({int(z) for numbers in train_set.numbers for z in numbers}),  # for unseen-element checks
        "dataset_sha256": file_sha256(Path(data_path)),
        "teacher": str(data.attrs.get("teacher", "unknown")),
        "epochs": run.epoch,
        "train_settings": asdict(settings),
        "test_metrics": test_metrics.as_dict(),
        "val_metrics": val_metrics.as_dict(),
        "train_minutes": seconds / 60.0,
        "library_versions": library_versions(),
    }
    if run.init_sha256:
        metadata["init_sha256"] = run.init_sha256  # a preset name alone does not say which weights
    model.cpu()
    sha = save_checkpoint(model, out, metadata) if ctx.is_main else ""
    sha = str(distributed.share(sha, ctx))  # the other ranks wait for the checkpoint
    return TrainResult(out, sha, run.epoch, test_metrics, val_metrics, seconds, run.history)
