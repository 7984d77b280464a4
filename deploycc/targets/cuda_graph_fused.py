"""CUDA graphs over an Inductor-fused energy+forces graph: fewer kernels per replay than `cuda-graph`.

`cuda-graph` replays the eager forward and autograd backward kernel by kernel: about 500 launches per call
for tiny, which bounds its batch-1 latency (0.77 ms on an H200) however cheap each kernel is.  This target
first traces energy and -dE/dR into one ATen graph (`onnx_export.trace_energy_forces`: make_fx, backward
inlined, symbolic batch and atom sizes), then compiles it once with TorchInductor (`torch.compile`,
dynamic shapes, full graph), which fuses the element-wise chains (radial basis, envelope, SiLU, the
per-pair masks and their gradients) into generated kernels and leaves the matrix products to the vendor
library.  The compiled function is captured per (batch, atom) bucket and replayed by the same runner as
`cuda-graph` (padding, buckets and the shared memory pool are described in `cuda_graph.py`).

Artifact: the eager checkpoint, as for `cuda-graph`; compilation happens when the runner first sees a
bucket (on a GPU: Triton kernels, tens of seconds once per process).  The same code path runs on CPU
(Inductor's C++ backend), which is how it is unit-tested where no GPU exists; the target itself is CUDA-only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_checkpoint
from ..errors import UserInputError
from ..model import StudentModel
from .base import Runner, register
from .cuda_graph import CudaGraphRunner, CudaGraphTarget, Step
from .onnx_export import trace_energy_forces
from .settings import TargetSettings


OWN_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def fused_step(model: StudentModel, device: str, mode: str | None = None,
               options: dict[str, Any] | None = None) -> Step:
    """Energy and forces from one Inductor-compiled graph (forward and backward traced together).
    `mode`: torch.compile's mode (None: default; "max-autotune-no-cudagraphs" also generates the matrix
    products as Triton templates, tuned per shape, which lets Inductor fuse their epilogues).
    `options`: Inductor config overrides for this compile (torch.compile's `options`)."""
    if mode in OWN_CUDA_GRAPH_MODES:
        raise UserInputError(f"torch.compile mode '{mode}' captures its own CUDA graphs, which cannot nest inside "
                             "the runner's capture; use 'max-autotune-no-cudagraphs' or the default")
    traced = trace_energy_forces(model, device).traced
    compiled = torch.compile(traced, dynamic=True, fullgraph=True, mode=mode, options=options)  # not both

    def step(numbers: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            energy, forces = compiled(numbers, positions)
        return energy, forces

    return step


class FusedCudaGraphTarget(CudaGraphTarget):
    name = "cuda-graph-fused"
    description = "Inductor-fused forward + backward graph, captured as CUDA graphs per shape bucket"

    def availability(self, settings: TargetSettings) -> str | None:
        missing = super().availability(settings)
        if missing:
            return missing
        try:
            import triton  # noqa: F401  (Inductor's GPU code generator)
        except ImportError:
            return "needs triton (shipped with CUDA builds of PyTorch) for Inductor's GPU kernels"
        return None

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        mode = settings.extra.get("inductor_mode") or None
        step = fused_step(load_checkpoint(artifact).model, settings.device, mode)
        return CudaGraphRunner(step, settings, label=self.name)


register(FusedCudaGraphTarget())
