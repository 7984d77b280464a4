"""The reference target: the PyTorch model itself, energies and forces by autograd."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..model import StudentModel, energy_and_forces, energy_forces_virial
from .base import Exported, Runner, Target, register
from .settings import TargetSettings


class EagerRunner(Runner):
    def __init__(self, model: StudentModel, device: str) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.periodic = model.periodic
        self.cutoff = model.cutoff

    def run(self, numbers: torch.Tensor, positions: torch.Tensor, *periodic: torch.Tensor
            ) -> tuple[torch.Tensor, ...]:
        periodic = tuple(x.to(self.device) for x in periodic)
        if periodic:
            return energy_forces_virial(self.model, numbers.to(self.device), positions.to(self.device), *periodic)
        return energy_and_forces(self.model, numbers.to(self.device), positions.to(self.device))


class EagerTarget(Target):
    name = "eager"
    artifact_file = "model.pt"
    description = "PyTorch eager (the reference), autograd forces"
    devices = ("cpu", "cuda")
    periodic = True

    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        path = out_dir / self.artifact_file
        save_checkpoint(model.cpu(), path, {"exported_for": settings.device})
        model.to(settings.device)
        return Exported(path)

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        return EagerRunner(load_checkpoint(artifact).model, settings.device)


register(EagerTarget())
