"""The reference target: the PyTorch model itself, forces and virials by autograd."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..model import StudentModel, energy_forces_virials
from .base import Exported, ModuleRunner, Runner, Target, register
from .settings import MemoryModel, TargetSettings


BLOCK_BYTES = 4e6  # gathered features per block on CPU: in cache, and below glibc's mmap threshold (32 MB)


def eager_runner(model: StudentModel, device: str, dtype: torch.dtype = torch.float32) -> ModuleRunner:
    """The eager model on `device` in inference mode: recomputing contractions, in blocks of atoms on CPU.
    `dtype` float64: weights and pair vectors in double precision (finite-difference checks of forces,
    which float32 energies cannot resolve)."""
    model = model.to(device=device, dtype=dtype).eval().set_recompute(True, BLOCK_BYTES if device == "cpu" else 0)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    runner = ModuleRunner(lambda *tensors: energy_forces_virials(model, *tensors), device)
    runner.input_dtype = dtype
    return runner


@register
class EagerTarget(Target):
    name = "eager"
    artifact_file = "model.pt"
    description = "PyTorch eager (the reference), autograd forces"
    devices = ("cpu", "cuda")
    defaults = TargetSettings(target="eager", memory=MemoryModel(base=0.5e9, per_slot=1.3e3))

    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        path = out_dir / self.artifact_file
        save_checkpoint(model.cpu(), path, {"exported_for": settings.device})
        return Exported(path)

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        return eager_runner(load_checkpoint(artifact).model, settings.device)
