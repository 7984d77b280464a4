"""TorchScript: a scripted wrapper computing per-atom energies, forces and virials (autograd inside the graph)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..model import EnergyForcesVirials, StudentModel
from .base import Exported, ModuleRunner, Runner, Target, register
from .settings import MemoryModel, TargetSettings


@register
class TorchScriptTarget(Target):
    name = "torchscript"
    artifact_file = "model.ts"
    description = "torch.jit.script of energy + autograd forces and virials"
    devices = ("cpu", "cuda")
    # The scripted graph differentiates with plain autograd (TorchScript runs no custom autograd functions),
    # so it keeps the gathered neighbour features for the backward pass: more memory per slot than eager.
    defaults = TargetSettings(target="torchscript", memory=MemoryModel(base=0.5e9, per_slot=4.5e3), extra={"chunk_atoms": 512})

    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        # torch.jit.trace cannot record the backward pass; scripting keeps autograd.grad in the graph.
        model = model.to(settings.device).eval().set_recompute(False)
        scripted = torch.jit.script(EnergyForcesVirials(model))
        path = out_dir / self.artifact_file
        torch.jit.save(scripted, str(path))
        return Exported(path)

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        module = torch.jit.load(str(artifact), map_location=settings.device)
        return ModuleRunner(module, settings.device)
