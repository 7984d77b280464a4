"""The target plug-in interface: export an artifact from a model; open a runner on an artifact.

Parity, benchmarking, manifests and the CLI use only this interface, so adding a target is one new module
that subclasses `Target` and calls `register`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import UserInputError
from ..model import StudentModel
from .settings import TargetSettings


@dataclass
class Exported:
    """What `Target.export` wrote: the artifact file and notes for the manifest."""

    path: Path
    notes: dict[str, Any] = field(default_factory=dict)


class Runner(ABC):
    """A loaded artifact that maps a padded batch to (energy [B], forces [B, N, 3])."""

    device: str = "cpu"

    @abstractmethod
    def predict(self, numbers: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs on any device (int64 [B, N], float32 [B, N, 3]); outputs on the runner's device."""

    def synchronize(self) -> None:
        """Wait for queued device work (for timing)."""
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


class Target(ABC):
    """A deployment backend: how to make its artifact and how to run it."""

    name: str = ""
    artifact_file: str = ""
    description: str = ""
    devices: tuple[str, ...] = ("cpu",)

    def availability(self, settings: TargetSettings) -> str | None:
        """None when this target can build and run here with these settings, else the reason it cannot."""
        if settings.device.startswith("cuda") and not torch.cuda.is_available():
            return "no CUDA GPU visible to PyTorch"
        if not any(settings.device.startswith(d) for d in self.devices):
            return f"runs on {', '.join(self.devices)}, not {settings.device}"
        return None

    @abstractmethod
    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        """Write the artifact for settings.device into out_dir (a fresh temporary folder)."""

    @abstractmethod
    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        """Open a runner on an artifact file written by `export`."""


_REGISTRY: dict[str, Target] = {}


def register(target: Target) -> Target:
    _REGISTRY[target.name] = target
    return target


def registered() -> dict[str, Target]:
    from . import load_builtin_targets

    load_builtin_targets()
    return dict(_REGISTRY)


def get_target(name: str) -> Target:
    targets = registered()
    if name not in targets:
        raise UserInputError(f"unknown target '{name}': choose one of {', '.join(targets)}, or 'all'")
    return targets[name]
