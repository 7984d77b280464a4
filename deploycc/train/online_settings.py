"""The settings of an online distillation run (train/online.py), checked before any work and stored in the
checkpoint."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import MissingDependencyError, UserInputError
from .loop import check_domain


@dataclass
class OnlineSettings:
    """Everything that decides an online run (stored in the checkpoint)."""

    steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-3
    min_lr_ratio: float = 0.02
    warmup_steps: int = 100
    weight_decay: float = 1e-5
    energy_weight: float = 10.0
    force_weight: float = 1.0
    grad_clip: float = 10.0
    ema_decay: float = 0.995
    workers: int = 1
    prefetch: int = 8  # batches each worker keeps ready
    conformers: int = 3  # RDKit conformers per training molecule
    md_fraction: float = 0.0  # share of each batch from teacher-MD walkers at 300-1000 K (the rest: rattles)
    md_stride: int = 4  # teacher-MD steps (0.5 fs) between a walker's training frames
    md_walkers: int = 64  # walkers per labelling worker, advanced by one batched teacher call a step
    nms_fraction: float = 0.0  # share of each batch by normal-mode sampling at 300-1000 K (normal_modes.py)
    box_every: int = 0  # every Nth batch of a worker, a rattled periodic box of a training cluster replaces a rattle
    eval_every: int = 200
    eval_frames: int = 4  # frames per validation / test molecule
    max_minutes: float = 0.0
    seed: int = 0
    device: str = "cpu"  # where the student trains; the teacher's workers run on CPU
    compile: bool = False  # the student's energies and gradient from one torch.compile'd function (compiled.py)
    init: str = ""  # a checkpoint of the same architecture to start from (a warm restart), else a fresh fit
    stream: int = 0  # seed stream of the training frames: a warm restart takes another, to see new frames only
    new_teacher: bool = False  # --init was trained on another teacher: refit its element references first

    def check(self) -> None:
        if int(self.stream) < 0:
            raise UserInputError(f"--stream must be at least 0, got {self.stream}")
        if self.new_teacher and not self.init:
            raise UserInputError("--new-teacher needs --init (the checkpoint of the other teacher)")
        check_domain(self, at_least_one=("steps", "batch_size", "workers", "prefetch", "conformers", "eval_every",
                                         "eval_frames", "md_stride", "md_walkers"), positive=("lr", "ema_decay"),
                     non_negative=("energy_weight",))
        for flag, kind, fraction, count in (("--md-fraction", "teacher-MD", self.md_fraction, self.thermal_count()),
                                            ("--nms-fraction", "normal-mode", self.nms_fraction, self.nms_count())):
            if not 0.0 <= float(fraction) <= 1.0:
                raise UserInputError(f"{flag} must be between 0 and 1, got {fraction}")
            if fraction > 0 and count == 0:
                raise UserInputError(f"{flag} {fraction} gives no {kind} frame in a batch of {self.batch_size}: "
                                     f"give at least {math.ceil(0.5 / self.batch_size * 1e4) / 1e4:g}")
        if self.thermal_count() + self.nms_count() > self.batch_size:
            raise UserInputError(f"--md-fraction {self.md_fraction} and --nms-fraction {self.nms_fraction} give "
                                 f"{self.thermal_count()} + {self.nms_count()} frames, more than the batch of "
                                 f"{self.batch_size}")
        if int(self.box_every) < 0:
            raise UserInputError(f"--box-every must be at least 0 (0: no periodic boxes), got {self.box_every}")
        if self.box_every and self.thermal_count() + self.nms_count() >= self.batch_size:
            raise UserInputError(f"--box-every: a periodic box replaces a rattled frame, and --md-fraction "
                                 f"{self.md_fraction} with --nms-fraction {self.nms_fraction} leave none")
        from ..targets.settings import checked_device

        checked_device(self.device)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise MissingDependencyError(f"--device {self.device}: no CUDA GPU visible to PyTorch")
        check_domain(self, non_negative=("max_minutes",))

    def thermal_count(self) -> int:
        """Teacher-MD frames per batch."""
        return int(math.floor(self.batch_size * float(self.md_fraction) + 0.5))

    def nms_count(self) -> int:
        """Normal-mode-sampled frames per batch."""
        return int(math.floor(self.batch_size * float(self.nms_fraction) + 0.5))
