"""AOTInductor: the joint energy+forces graph compiled ahead of time into a self-contained package.

The make_fx graph of energy and its gradient (the same one the ONNX target exports) goes through
`torch.export` with dynamic batch and atom axes and `torch._inductor.aoti_compile_and_package`: fused C++
loops on CPU (Triton kernels on CUDA), in one `model.pt2`.  On CUDA the runner would also replay each
(batch, atom-count) bucket as a CUDA graph (`extra.cuda_graphs`); that path is disabled (see `devices`).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch
import torch._inductor  # noqa: F401  (not imported by `import torch` on every version)

from ..model import StudentModel
from .base import Exported, Runner, Target, register
from .cuda_graph import CudaGraphRunner
from .onnx_export import dynamic_axes, example_inputs, trace_energy_forces
from .settings import TargetSettings


class AotiRunner(Runner):
    """Calls the compiled package directly (CPU, or CUDA without graph replay)."""

    def __init__(self, package, device: str) -> None:
        self.package = package
        self.device = device

    def run(self, numbers: torch.Tensor, positions: torch.Tensor, *periodic: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
        energy, forces = self.package(numbers.to(self.device), positions.to(self.device, torch.float32))
        return energy, forces


class AotiTarget(Target):
    name = "aoti"
    artifact_file = "model.pt2"
    description = "AOTInductor package of the joint graph (compiled C++ loops; CPU)"
    # CUDA: the Triton build + CUDA-graph replay crashed without output in its one GPU attempt (H200,
    # torch 2.11); CPU-only until that is investigated.
    devices = ("cpu",)

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
        return Exported(path, {"compiler": f"AOTInductor (torch {torch.__version__})",
                               "cuda_graphs": bool(settings.extra.get("cuda_graphs", True))})

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        package = torch._inductor.aoti_load_package(str(artifact))
        if settings.device.startswith("cuda") and settings.extra.get("cuda_graphs", True):
            return CudaGraphRunner(lambda z, r: tuple(package(z, r)), settings, label="aoti")
        return AotiRunner(package, settings.device)


register(AotiTarget())
