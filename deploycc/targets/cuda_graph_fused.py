"""CUDA graphs over an Inductor-fused energies+forces+virials graph: fewer kernels per replay than `cuda-graph`.

`cuda-graph` replays the eager forward and autograd backward kernel by kernel, which bounds its small-request
latency however cheap each kernel is.  This target first traces the energy and its gradient into one ATen
graph (`onnx_export.trace_energy_forces`: make_fx, backward inlined, symbolic atom and slot sizes), then
compiles it once with TorchInductor (`torch.compile`, dynamic shapes, full graph), which fuses the
element-wise chains (radial basis, envelope, SiLU and their gradients) into generated kernels and leaves
the matrix products to the vendor library.  The compiled function is captured per (atoms, slots) bucket and
replayed by the `cuda-graph` runner (padding, buckets and the shared memory pool: `cuda_graph.py`).

Artifact: the eager checkpoint, as for `cuda-graph`; compilation happens when the runner first sees a
bucket (on a GPU: Triton kernels, tens of seconds once per process).  The same code path runs on CPU
(Inductor's C++ backend), which is how it is unit-tested where no GPU exists.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import load_checkpoint
from ..errors import UserInputError
from ..model import StudentModel
from .base import Runner, register
from .cuda_graph import CUDA_MEMORY, CUDA_PROFILES, CudaGraphRunner, CudaGraphTarget, Step
from .onnx_export import trace_energy_forces
from .settings import TargetSettings

OWN_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def fused_step(model: StudentModel, device: str, mode: str | None = None) -> Step:
    """Energies, forces and virials from one Inductor-compiled graph (forward and backward traced together).
    `mode`: torch.compile's mode (None: default; "max-autotune-no-cudagraphs" also generates the matrix
    products as Triton templates, tuned per shape)."""
    if mode in OWN_CUDA_GRAPH_MODES:
        raise UserInputError(f"torch.compile mode '{mode}' captures its own CUDA graphs, which cannot nest inside "
                             "the runner's capture; use 'max-autotune-no-cudagraphs' or the default")
    traced = trace_energy_forces(model, device).traced
    compiled = torch.compile(traced, dynamic=True, fullgraph=True, mode=mode)

    def step(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            return tuple(compiled(*tensors))

    return step


@register
class FusedCudaGraphTarget(CudaGraphTarget):
    name = "cuda-graph-fused"
    description = "Inductor-fused forward + backward graph, captured as CUDA graphs per shape bucket"
    defaults = TargetSettings(target="cuda-graph-fused", device="cuda", **CUDA_PROFILES,
                              memory=CUDA_MEMORY, extra={"atom_multiple": 32, "slot_multiple": 8})

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
        step = fused_step(load_checkpoint(artifact).model, settings.device, settings.extra.get("inductor_mode") or None)
        return CudaGraphRunner(step, settings, self.name)
