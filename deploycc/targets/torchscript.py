"""TorchScript: a scripted wrapper whose forward returns energy and -dE/dR, plus the virial for periodic models
(autograd inside the graph)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..model import EnergyForces, EnergyForcesVirial, StudentModel
from .base import Exported, Runner, Target, register
from .settings import TargetSettings


class TorchScriptRunner(Runner):
    def __init__(self, module: torch.jit.ScriptModule, device: str) -> None:
        self.module = module
        self.device = device
        self.periodic = bool(getattr(module, "periodic", False))
        self.cutoff = float(getattr(module, "cutoff", 0.0))

    def run(self, numbers: torch.Tensor, positions: torch.Tensor, *periodic: torch.Tensor
            ) -> tuple[torch.Tensor, ...]:
        periodic = tuple(x.to(self.device) for x in periodic)
        return self.module(numbers.to(self.device), positions.to(self.device), *periodic)


class TorchScriptTarget(Target):
    name = "torchscript"
    artifact_file = "model.ts"
    description = "torch.jit.script of energy + autograd forces"
    devices = ("cpu", "cuda")
    periodic = True

    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        # torch.jit.trace cannot record the backward pass; scripting keeps autograd.grad in the graph.
        model = model.to(settings.device).eval()
        wrapper = EnergyForcesVirial(model) if model.periodic else EnergyForces(model)
        scripted = torch.jit.script(wrapper)
        path = out_dir / self.artifact_file
        torch.jit.save(scripted, str(path))
        return Exported(path)

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        return TorchScriptRunner(torch.jit.load(str(artifact), map_location=settings.device), settings.device)


register(TorchScriptTarget())
