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
from ..periodic import has_periodic, periodic_inputs
from .settings import TargetSettings


@dataclass
class Exported:
    """What `Target.export` wrote: the artifact file and notes for the manifest."""

    path: Path
    notes: dict[str, Any] = field(default_factory=dict)


class Runner(ABC):
    """A loaded artifact that maps a padded batch to (energy [B], forces [B, N, 3]) and, for periodic
    artifacts, the virial -dE/d(strain) [B, 3, 3] (eV; see deploycc/model/stress.py).

    Subclasses implement `run`; `evaluate` adds the periodic inputs (cell, pbc, lattice shifts) for
    artifacts of periodic models and refuses periodic structures for the others."""

    device: str = "cpu"
    periodic: bool = False  # takes (numbers, positions, cell, pbc, shifts), returns the virial
    cutoff: float = 0.0

    def evaluate(self, numbers: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor | None = None,
                 pbc: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Energy, forces and virial (None for molecular artifacts).  Inputs on any device (int64 [B, N],
        float32 [B, N, 3], optional cells [B, 3, 3] and pbc flags [B, 3]); outputs on the runner's device."""
        if self.periodic:
            out = self.run(*periodic_inputs(numbers, positions, cell, pbc, self.cutoff))
        elif has_periodic(pbc):
            raise UserInputError("periodic structures given to an artifact built without PBC support; "
                                 "train a periodic model (e.g. --model metals-tiny) or set pbc=False")
        else:
            out = self.run(numbers, positions)
        return out[0], out[1], (out[2] if len(out) > 2 else None)

    def predict(self, numbers: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor | None = None,
                pbc: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy and forces (see `evaluate`)."""
        energy, forces, _virial = self.evaluate(numbers, positions, cell, pbc)
        return energy, forces

    @abstractmethod
    def run(self, numbers: torch.Tensor, positions: torch.Tensor, *periodic: torch.Tensor
            ) -> tuple[torch.Tensor, ...]:
        """The artifact's own call; `periodic` is (cell, pbc, shifts) for periodic artifacts, else empty.
        Returns (energy, forces), plus the virial for periodic artifacts."""

    def synchronize(self) -> None:
        """Wait for queued device work (for timing)."""
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


class ChunkedRunner(Runner):
    """Runs a batch in chunks of at most `chunk` structures.

    On CPU the dense pair tensors of a large batch fall out of cache and throughput drops; chunks of the
    measured best size keep it flat (set per target as `extra.chunk_cpu` in targets/<name>.toml)."""

    def __init__(self, inner: Runner, chunk: int) -> None:
        self.inner = inner
        self.chunk = chunk
        self.device = inner.device
        self.periodic = inner.periodic
        self.cutoff = inner.cutoff

    def evaluate(self, numbers: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor | None = None,
                 pbc: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if numbers.shape[0] <= self.chunk:
            return self.inner.evaluate(numbers, positions, cell, pbc)
        part = lambda x, k: None if x is None else x[k : k + self.chunk]  # noqa: E731
        parts = [self.inner.evaluate(numbers[k : k + self.chunk], positions[k : k + self.chunk], part(cell, k),
                                     part(pbc, k)) for k in range(0, numbers.shape[0], self.chunk)]
        virial = None if parts[0][2] is None else torch.cat([w for _, _, w in parts])
        return torch.cat([e for e, _, _ in parts]), torch.cat([f for _, f, _ in parts]), virial

    def run(self, numbers: torch.Tensor, positions: torch.Tensor, *periodic: torch.Tensor
            ) -> tuple[torch.Tensor, ...]:
        return self.inner.run(numbers, positions, *periodic)

    def synchronize(self) -> None:
        self.inner.synchronize()


class Target(ABC):
    """A deployment backend: how to make its artifact and how to run it."""

    name: str = ""
    artifact_file: str = ""
    description: str = ""
    devices: tuple[str, ...] = ("cpu",)
    periodic: bool = False  # exports periodic models (cell, pbc and lattice-shift inputs)

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


def open_runner(target: Target, artifact: Path, settings: TargetSettings) -> Runner:
    """The target's runner, chunked on CPU when its settings ask for it (`extra.chunk_cpu`)."""
    runner = target.runner(artifact, settings)
    chunk = int(settings.extra.get("chunk_cpu", 0))
    if chunk > 0 and settings.device == "cpu":
        return ChunkedRunner(runner, chunk)
    return runner


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
