"""TorchScript: a scripted, frozen wrapper computing per-atom energies, forces and virials (autograd inside the
graph), run on the CPU by the JIT interpreter with one plan for every input shape.

Measured in lab/ts_speed.py and docs/benchmarks/cpu-torchscript.md (2 shared CPU cores): the slow calls of the
default setup were OpenMP stalls, not recompilation: a team of two threads waits at every parallel op for its
slower member, which another process on the second core often holds off (a quarter of the calls of one
molecule at 100-650 ms instead of 3); one thread is never waited for.  The default profiling executor also
spends the first three calls profiling and compiling (50-160 ms each) and leaves guards with fallback paths in
its plan; freezing at export makes calls 10-20% faster.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from ..model import EnergyForcesVirials, StudentModel
from .base import Exported, GraphInputs, ModuleRunner, Runner, Target, register
from .settings import MemoryModel, TargetSettings

#: Calls of at most this many atoms run on one intra-op thread (`extra.serial_atoms`; 0: never).
SERIAL_ATOMS = 64


@contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` inside, then restored (None: unchanged).  With the OpenMP
    backend the count is an OpenMP setting of the calling thread, so other threads' calls are unaffected."""
    previous = torch.get_num_threads()
    if threads is None or threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class TorchScriptRunner(ModuleRunner):
    """Calls the loaded module with the JIT's optimising executor off on the CPU, small calls on one thread.

    `torch.jit.optimized_execution(False)`: the executor makes one plan on the first call (no profiling runs,
    no shape guards, no fused kernels, so nothing to recompile when the atom or slot count changes) and keeps
    it; the artifact was frozen and optimised at export, so the plan is that graph, autograd.grad included.
    The flag is process-global and read when a plan is made: it is set around every call, not once at open,
    so the runner behaves the same whatever the process's setting and other TorchScript code keeps its own.

    `serial_atoms`: calls of at most this many atoms run on one intra-op thread, immune to the OpenMP stalls
    of a shared machine; on an idle one a second thread gains ~10% at 25 atoms, ~30% at 50.  Larger calls keep
    the process's thread count (on a busy machine, build with `serial_atoms` above `chunk_atoms`, or run with
    one thread).  CUDA runners keep the default executor (not measured here)."""

    def __init__(self, module: torch.jit.ScriptModule, device: str, serial_atoms: int = SERIAL_ATOMS) -> None:
        super().__init__(module, device)
        self.serial_atoms = serial_atoms

    def infer_impl(self, inputs: GraphInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.device.startswith("cpu"):
            return super().infer_impl(inputs)
        serial = 0 < inputs.atoms <= self.serial_atoms
        with torch.jit.optimized_execution(False), intra_op_threads(1 if serial else None):
            return super().infer_impl(inputs)


@register
class TorchScriptTarget(Target):
    name = "torchscript"
    artifact_file = "model.ts"
    description = "torch.jit.script + freeze of energy + autograd forces and virials"
    devices = ("cpu", "cuda")
    # The scripted graph differentiates with plain autograd (TorchScript runs no custom autograd functions),
    # so it keeps the gathered neighbour features for the backward pass: more memory per slot than eager.
    defaults = TargetSettings(target="torchscript", memory=MemoryModel(base=0.5e9, per_slot=4.5e3),
                              extra={"chunk_atoms": 512, "serial_atoms": SERIAL_ATOMS})

    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        # torch.jit.trace cannot record the backward pass; scripting keeps autograd.grad in the graph.  Freezing
        # inlines the weights as constants and folds them (optimize_for_inference pre-transposes the linear
        # layers), measured 10-20% faster per call; the wrapper clones rather than detaches, as freezing drops detach.
        model = model.to(settings.device).eval().set_recompute(False)
        scripted = torch.jit.script(EnergyForcesVirials(model)).eval()
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(scripted, preserved_attrs=["cutoff"]))
        path = out_dir / self.artifact_file
        torch.jit.save(frozen, str(path))
        return Exported(path, notes={"frozen": True, "executor": "optimized_execution(False) on cpu"})

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        module = torch.jit.load(str(artifact), map_location=settings.device)
        return TorchScriptRunner(module, settings.device, int(settings.extra.get("serial_atoms", SERIAL_ATOMS)))
