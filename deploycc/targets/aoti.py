"""AOTInductor: the joint energies+forces+virials graph compiled ahead of time into a self-contained package.

The make_fx graph of the energy and its gradient (the one the ONNX target exports) goes through
`torch.export` with dynamic atom and slot axes and `torch._inductor.aoti_compile_and_package`: fused C++
loops on CPU, in one `model.pt2`.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch
import torch._inductor  # noqa: F401  (not imported by `import torch` on every version)

from ..model import StudentModel
from .base import Exported, ModuleRunner, Runner, Target, register
from .onnx_export import dynamic_axes, example_inputs, trace_energy_forces
from .settings import MemoryModel, TargetSettings


@register
class AotiTarget(Target):
    name = "aoti"
    artifact_file = "model.pt2"
    description = "AOTInductor package of the joint graph (compiled C++ loops; CPU)"
    # CUDA: the Triton build crashed without output in its one GPU attempt (H200, torch 2.11); CPU-only until
    # that is investigated.
    devices = ("cpu",)
    defaults = TargetSettings(target="aoti", memory=MemoryModel(base=0.5e9, per_slot=3.0e3), extra={"chunk_atoms": 256})

    def availability(self, settings: TargetSettings) -> str | None:
        if not hasattr(torch._inductor, "aoti_compile_and_package"):
            return f"torch {torch.__version__} has no AOTInductor packaging (needs torch >= 2.6)"
        if shutil.which("g++") is None and shutil.which("c++") is None:
            return "AOTInductor needs a C++ compiler (g++) on PATH"
        return super().availability(settings)

    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        traced = trace_energy_forces(model, settings.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(traced, example_inputs(settings.device), dynamic_shapes=dynamic_axes())
            path = out_dir / self.artifact_file
            torch._inductor.aoti_compile_and_package(program, package_path=str(path))
        return Exported(path, {"compiler": f"AOTInductor (torch {torch.__version__})"})

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        package = torch._inductor.aoti_load_package(str(artifact))
        return ModuleRunner(lambda *tensors: tuple(package(*tensors)), settings.device)
