"""CUDA graphs: the eager fp32 model's forward *and* autograd backward, captured once per shape bucket.

Artifact: the eager checkpoint (model.pt), not the TorchScript file.  The capture runs plain PyTorch
(energy, then torch.autograd.grad on a static positions buffer, as `energy_and_forces` does); the
TorchScript profiling executor re-optimises its graph during its first calls, which would have to be
warmed past before a capture, and adds nothing once the kernels are recorded.

Runner: a request is split into chunks of at most the profile's batch max; each chunk is padded up to a
(batch bucket, atom bucket): powers of two for the batch, capped at its max, and the atom count rounded up
to a multiple of `extra.atom_multiple` (8 by default; 0 means powers of two, from 8), capped at the atoms
max.  Padding structures and atoms get number 0: they add nothing to the energy and get zero force.  The
first request of a bucket warms up on a side stream and captures a torch.cuda.CUDAGraph over static input
and output tensors; later ones copy into the inputs (zeroing them first unless the request has the same
shape as the last one, whose padding is still zero: the graph never writes its inputs), replay, and copy
the outputs out.

All graphs share one memory pool.  That is safe because replays are serialised on the current stream and
every replay's outputs are copied out before the next replay can reuse the pool.  Not thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..errors import UserInputError
from ..model import StudentModel
from .base import Exported, Runner, Target, register
from .settings import TargetSettings

WARMUP_CALLS = 3


def batch_bucket(b: int, b_max: int) -> int:
    """The next power of two >= b, capped at b_max."""
    return min(1 << max(b - 1, 0).bit_length(), b_max)


def atom_bucket(n: int, n_max: int, multiple: int = 8) -> int:
    """n rounded up to a multiple of `multiple` (a power of two >= 8 when multiple is 0), capped at n_max."""
    if multiple > 0:
        return min(-(-n // multiple) * multiple, n_max)
    return min(max(8, 1 << max(n - 1, 0).bit_length()), n_max)


@dataclass
class _Captured:
    """One captured graph and its static tensors."""

    graph: torch.cuda.CUDAGraph
    numbers: torch.Tensor
    positions: torch.Tensor
    energy: torch.Tensor
    forces: torch.Tensor
    filled: tuple[int, int] = (-1, -1)  # (b, n) of the last request copied in; outside it the inputs are zero


Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def eager_step(model: StudentModel, device: str) -> Step:
    """Energy and -dE/dR of the eager model, as a function of static input buffers."""
    model = model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)

    def step(numbers: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            pos = positions.clone().requires_grad_(True)
            energy = model(numbers, pos)
            (grad,) = torch.autograd.grad(energy.sum(), pos)
        return energy.detach(), -grad.detach()

    return step


class CudaGraphRunner(Runner):
    """Replays one captured forward+backward graph per (batch bucket, atom bucket)."""

    def __init__(self, step: Step, settings: TargetSettings, label: str = "cuda-graph") -> None:
        self.device = settings.device
        self.step = step
        self.label = label
        self.batch_max = settings.batch.max
        self.atoms_max = settings.atoms.max
        self.multiple = int(settings.extra.get("atom_multiple", 8))
        self.graphs: dict[tuple[int, int], _Captured] = {}
        self.pool = None

    def _capture(self, b: int, n: int) -> _Captured:
        numbers = torch.zeros(b, n, dtype=torch.long, device=self.device)
        positions = torch.zeros(b, n, 3, dtype=torch.float32, device=self.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                self.step(numbers, positions)
        torch.cuda.current_stream().wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            energy, forces = self.step(numbers, positions)
        return _Captured(graph, numbers, positions, energy, forces)

    def _graph(self, b: int, n: int) -> _Captured:
        key = (batch_bucket(b, self.batch_max), atom_bucket(n, self.atoms_max, self.multiple))
        if key not in self.graphs:
            self.graphs[key] = self._capture(*key)
        return self.graphs[key]

    def _replay(self, numbers: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = numbers.shape
        captured = self._graph(b, n)
        if captured.filled != (b, n):  # same shape as last time: the padding is still zero, skip two kernels
            captured.numbers.zero_()
            captured.positions.zero_()
            captured.filled = (b, n)
        captured.numbers[:b, :n].copy_(numbers)
        captured.positions[:b, :n].copy_(positions)
        captured.graph.replay()
        return captured.energy[:b].clone(), captured.forces[:b, :n].clone()

    def run(self, numbers: torch.Tensor, positions: torch.Tensor, *periodic: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = numbers.shape
        if n > self.atoms_max:
            raise UserInputError(f"{n} atoms per structure exceeds the {self.label} profile maximum of "
                                 f"{self.atoms_max}; raise [atoms] max in targets/{self.label}.toml")
        with torch.cuda.device(torch.device(self.device)):
            numbers = numbers.to(self.device)
            positions = positions.to(self.device, torch.float32)
            parts = [self._replay(numbers[k : k + self.batch_max], positions[k : k + self.batch_max])
                     for k in range(0, b, self.batch_max)]
        if len(parts) == 1:  # no concatenation (two fewer copies per call)
            return parts[0]
        return torch.cat([e for e, _f in parts]), torch.cat([f for _e, f in parts])


class CudaGraphTarget(Target):
    name = "cuda-graph"
    artifact_file = "model.pt"
    description = "eager fp32 forward + autograd backward captured as CUDA graphs per shape bucket"
    devices = ("cuda",)

    def availability(self, settings: TargetSettings) -> str | None:
        if not torch.cuda.is_available():
            return "needs a CUDA GPU"
        return super().availability(settings)

    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        path = out_dir / self.artifact_file
        save_checkpoint(model.cpu(), path, {"exported_for": settings.device, "runner": self.name})
        model.to(settings.device)
        notes = {"artifact": "eager checkpoint", "capture": "forward + autograd backward",
                 "batch_buckets": "powers of two", "atom_multiple": int(settings.extra.get("atom_multiple", 8))}
        return Exported(path, notes)

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        return CudaGraphRunner(eager_step(load_checkpoint(artifact).model, settings.device), settings)


register(CudaGraphTarget())
