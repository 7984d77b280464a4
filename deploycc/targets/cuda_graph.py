"""CUDA graphs: the eager fp32 model's forward *and* backward, captured once per (atoms, slots) bucket.

Artifact: the eager checkpoint (model.pt).  The capture runs plain PyTorch (`energy_forces_virials` on
static input buffers); the TorchScript profiling executor would re-optimise its graph during its first
calls, which would have to be warmed past before a capture, and adds nothing once kernels are recorded.

Runner: a request of A atoms with M slots each is padded up to a bucket: atoms rounded up to a multiple of
`extra.atom_multiple` (32; above 512 atoms to 1/16 of the next power of two, so padding stays below 1/8 of
the request, ~4% on average), slots to a multiple of `extra.slot_multiple` (8), both capped at the profile
maxima.  Padding atoms have number 0 and padding slots point at their own atom with a vector beyond the
cutoff: they add nothing to the real atoms' energies and forces.  The first request of a bucket warms up
on a side stream and captures a torch.cuda.CUDAGraph over static input and output tensors; later ones copy
into the inputs (resetting the padding template first unless the request has the same shape as the last
one: the graph never writes its inputs), replay, and copy the outputs out.

All graphs share one memory pool: replays are serialised on the current stream and every replay's outputs
are copied out before the next replay can reuse the pool.  Not thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..errors import UserInputError
from ..model import StudentModel, energy_forces_virials
from ..runtime.neighbours import PADDING_DISTANCE
from .base import Exported, GraphInputs, Runner, Target, register
from .settings import MemoryModel, Profile, TargetSettings

WARMUP_CALLS = 3
Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


def atom_bucket(n: int, n_max: int, multiple: int = 32) -> int:
    """n rounded up to a multiple of `multiple`, or of 1/16 of the next power of two when that is coarser;
    capped at n_max."""
    grain = max(multiple, (1 << max(n - 1, 0).bit_length()) // 16)
    return min(-(-n // grain) * grain, n_max)


def slot_bucket(m: int, m_max: int, multiple: int = 8) -> int:
    """m rounded up to a multiple of `multiple`, capped at m_max."""
    return min(-(-m // multiple) * multiple, m_max)


def eager_step(model: StudentModel, device: str) -> Step:
    """Per-atom energies, forces and virials of the eager model, as a function of static input buffers."""
    model = model.to(device).eval().set_recompute(True)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return lambda *tensors: energy_forces_virials(model, *tensors)


@dataclass
class _Captured:
    """One captured graph, its static inputs and outputs, and the padding template of its inputs."""

    graph: torch.cuda.CUDAGraph
    inputs: GraphInputs
    template: GraphInputs
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    filled: tuple[int, int] = (-1, -1)  # (A, M) of the last request copied in; outside it: the template


def padding_template(atoms: int, slots: int, device: str | torch.device, dtype: torch.dtype = torch.float32
                     ) -> GraphInputs:
    """Inputs of `atoms` padding atoms (number 0) whose slots point at themselves with far vectors."""
    index = torch.arange(atoms, device=device)
    vectors = torch.zeros(atoms, slots, 3, device=device, dtype=dtype)
    vectors[..., 0] = PADDING_DISTANCE
    return GraphInputs(torch.zeros(atoms, dtype=torch.long, device=device), vectors,
                       index[:, None].expand(atoms, slots).contiguous(),
                       torch.arange(atoms * slots, device=device).reshape(atoms, slots))


def remap_reverse(reverse: torch.Tensor, width: int) -> torch.Tensor:
    """Reverse indices j * M + m' of an [A, M] layout re-expressed for M' = `width` slots per atom."""
    m = reverse.shape[1]
    return reverse if m == width else (reverse // m) * width + reverse % m


def copy_into(static: GraphInputs, inputs: GraphInputs) -> None:
    """Write `inputs` into the leading atoms and slots of the larger `static` layout (padding untouched)."""
    a, m = inputs.atoms, inputs.slots
    static.numbers[:a].copy_(inputs.numbers)
    static.vectors[:a, :m].copy_(inputs.vectors)
    static.neighbours[:a, :m].copy_(inputs.neighbours)
    static.reverse[:a, :m].copy_(remap_reverse(inputs.reverse, static.slots))


def pad_inputs(inputs: GraphInputs, atoms: int, slots: int) -> GraphInputs:
    """`inputs` grown to `atoms` atoms with `slots` slots each by padding atoms and slots (new tensors)."""
    if (inputs.atoms, inputs.slots) == (atoms, slots):
        return inputs
    padded = padding_template(atoms, slots, inputs.numbers.device, inputs.vectors.dtype)
    copy_into(padded, inputs)
    return padded


class CudaGraphRunner(Runner):
    """Replays one captured forward+backward graph per (atom bucket, slot bucket)."""

    def __init__(self, step: Step, settings: TargetSettings, label: str = "cuda-graph") -> None:
        self.device = settings.device
        self.step = step
        self.label = label
        self.atoms: Profile = settings.atoms
        self.slots: Profile = settings.neighbours
        self.atom_multiple = int(settings.extra.get("atom_multiple", 32))
        self.slot_multiple = int(settings.extra.get("slot_multiple", 8))
        self.graphs: dict[tuple[int, int], _Captured] = {}
        self.pool = None

    def _capture(self, a: int, m: int) -> _Captured:
        template = padding_template(a, m, self.device)
        inputs = GraphInputs(*(t.clone() for t in template.tensors()))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                self.step(*inputs.tensors())
        torch.cuda.current_stream().wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = tuple(self.step(*inputs.tensors()))
        return _Captured(graph, inputs, template, outputs)

    def _graph(self, a: int, m: int) -> _Captured:
        key = (atom_bucket(a, self.atoms.max, self.atom_multiple), slot_bucket(m, self.slots.max, self.slot_multiple))
        if key not in self.graphs:
            self.graphs[key] = self._capture(*key)
        return self.graphs[key]

    def _fill(self, captured: _Captured, inputs: GraphInputs) -> None:
        shape = (inputs.atoms, inputs.slots)
        if captured.filled != shape:
            for target, source in zip(captured.inputs.tensors(), captured.template.tensors()):
                target.copy_(source)
            captured.filled = shape
        copy_into(captured.inputs, inputs)

    def infer_impl(self, inputs: GraphInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, m = inputs.atoms, inputs.slots
        if a > self.atoms.max or m > self.slots.max:
            raise UserInputError(f"{a} atoms with {m} neighbour slots exceed the {self.label} profile maxima "
                                 f"({self.atoms.max} atoms, {self.slots.max} slots); split the request")
        with torch.cuda.device(torch.device(self.device)):
            inputs = inputs.to(self.device)
            captured = self._graph(a, m)
            self._fill(captured, inputs)
            captured.graph.replay()
            energies, forces, virials = captured.outputs
            return energies[:a].clone(), forces[:a].clone(), virials[:a].clone()


# GPU memory, not yet measured on the neighbour layout (no GPU in the session that introduced it): the eager
# CPU figure per slot, and a 1.25x allowance for bucket padding.
CUDA_MEMORY = MemoryModel(base=0.3e9, per_slot=1.6e3)
CUDA_PROFILES = {"atoms": Profile(1, 1024, 1 << 17), "neighbours": Profile(1, 48, 256)}


@register
class CudaGraphTarget(Target):
    name = "cuda-graph"
    artifact_file = "model.pt"
    description = "eager fp32 forward + autograd backward captured as CUDA graphs per shape bucket"
    devices = ("cuda",)
    defaults = TargetSettings(target="cuda-graph", device="cuda", **CUDA_PROFILES,
                              memory=CUDA_MEMORY, extra={"atom_multiple": 32, "slot_multiple": 8})

    def availability(self, settings: TargetSettings) -> str | None:
        if not torch.cuda.is_available():
            return "needs a CUDA GPU"
        return super().availability(settings)

    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        path = out_dir / self.artifact_file
        save_checkpoint(model.cpu(), path, {"exported_for": settings.device, "runner": self.name})
        notes = {"artifact": "eager checkpoint", "capture": "forward + autograd backward",
                 "atom_multiple": int(settings.extra.get("atom_multiple", 32)),
                 "slot_multiple": int(settings.extra.get("slot_multiple", 8))}
        return Exported(path, notes)

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        return CudaGraphRunner(eager_step(load_checkpoint(artifact).model, settings.device), settings, self.name)
