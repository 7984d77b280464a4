"""The target interface: export an artifact from a model; open a runner on an artifact.

A target is one module in this package: a `Target` subclass with its default settings beside it,
registered by the `@register` decorator (modules are discovered, nothing else lists them).  Parity,
benchmarks, manifests and the CLI use only this interface.

Every artifact computes the same function of the padded neighbour layout (deploycc/model/student.py):
(numbers [A], vectors [A, M, 3], neighbours [A, M], reverse [A, M]) -> (energies [A], forces [A, 3],
virials [A, 3, 3]), per atom.  `Runner.infer` is the public call on a host `NeighbourBatch` (vectors in
float64, then cast; per-structure sums in float64); subclasses implement `infer_impl` on tensors.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np
import torch

from ..errors import UserInputError
from ..model import StudentModel
from ..runtime.neighbours import NeighbourBatch
from .settings import TargetSettings, with_overrides

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint

INPUT_NAMES = ("numbers", "vectors", "neighbours", "reverse")
OUTPUT_NAMES = ("energies", "forces", "virials")


@dataclass
class GraphInputs:
    """The four tensors every artifact takes (on one device)."""

    numbers: torch.Tensor  # int64 [A]
    vectors: torch.Tensor  # float32 [A, M, 3]
    neighbours: torch.Tensor  # int64 [A, M]
    reverse: torch.Tensor  # int64 [A, M]

    @classmethod
    def from_batch(cls, batch: NeighbourBatch, dtype: torch.dtype = torch.float32) -> "GraphInputs":
        return cls(torch.from_numpy(batch.numbers), torch.from_numpy(batch.vectors()).to(dtype),
                   torch.from_numpy(batch.neighbours), torch.from_numpy(batch.reverse))

    def to(self, device: str | torch.device) -> "GraphInputs":
        return GraphInputs(*(t.to(device) for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.numbers, self.vectors, self.neighbours, self.reverse

    @property
    def atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def slots(self) -> int:
        return int(self.neighbours.shape[1])


@dataclass
class Prediction:
    """Per-structure energies [S] (eV) and virials [S, 3, 3] (eV), forces [A, 3] (eV/Å), all float64."""

    energies: np.ndarray
    forces: np.ndarray
    virials: np.ndarray
    offsets: np.ndarray  # structure k owns forces[offsets[k]:offsets[k + 1]]

    def forces_of(self, k: int) -> np.ndarray:
        return self.forces[self.offsets[k] : self.offsets[k + 1]]


class Runner(ABC):
    """A loaded artifact.  Public `infer()` around the artifact's own `infer_impl()`.

    `chunk_atoms` > 0 (`extra.chunk_atoms` of CPU targets): a batch of many structures is run in calls of at
    most this many atoms (whole structures), measured faster where the per-slot tensors of one large call
    fall out of cache; one structure is never split."""

    device: str = "cpu"
    chunk_atoms: int = 0
    slot_layout: bool = True  # infer_impl takes GraphInputs; False: the artifact takes systems (metatomic)
    input_dtype: torch.dtype = torch.float32  # of the pair vectors handed to infer_impl

    def infer(self, batch: NeighbourBatch) -> Prediction:
        """Energies, forces and virials of every structure of `batch`."""
        if self.chunk_atoms > 0 and batch.atoms > self.chunk_atoms and batch.structures > 1:
            parts = [self.infer(part) for part in batch.split(self.chunk_atoms)]
            return Prediction(np.concatenate([p.energies for p in parts]), np.concatenate([p.forces for p in parts]),
                              np.concatenate([p.virials for p in parts]), batch.offsets)
        energies, forces, virials = self.infer_impl(GraphInputs.from_batch(batch, self.input_dtype))
        atom_energies = energies.detach().double().cpu().numpy()
        atom_virials = virials.detach().double().cpu().numpy()
        return Prediction(batch.per_structure(atom_energies), forces.detach().double().cpu().numpy(),
                          batch.per_structure(atom_virials), batch.offsets)

    @abstractmethod
    def infer_impl(self, inputs: GraphInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-atom energies [A], forces [A, 3] and virials [A, 3, 3] (on the runner's device)."""

    def synchronize(self) -> None:
        """Wait for queued device work (for timing)."""
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


@dataclass
class Exported:
    """What `Target.export` wrote: the artifact file and notes for the manifest."""

    path: Path
    notes: dict[str, Any] = field(default_factory=dict)


class Target(ABC):
    """A deployment backend: how to make its artifact and how to run it."""

    name: str = ""
    artifact_file: str = ""
    description: str = ""
    devices: tuple[str, ...] = ("cpu",)
    defaults: TargetSettings = TargetSettings(target="")

    def settings(self, device: str | None = None) -> TargetSettings:
        """This target's settings (defaults, then the override file), the device overridden if given."""
        return with_overrides(self.defaults).with_device(device)

    def availability(self, settings: TargetSettings) -> str | None:
        """None when this target can build and run here with these settings, else the reason it cannot."""
        if settings.device.startswith("cuda") and not torch.cuda.is_available():
            return "no CUDA GPU visible to PyTorch"
        if not any(settings.device.startswith(d) for d in self.devices):
            return f"runs on {', '.join(self.devices)}, not {settings.device}"
        return None

    @abstractmethod
    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        """Write the artifact for settings.device into out_dir (a fresh temporary folder)."""

    def export_checkpoint(self, checkpoint: "Checkpoint", settings: TargetSettings, out_dir: Path) -> Exported:
        """Export from a whole checkpoint; targets whose artifact records its elements or name override
        this, the others export a copy of the model alone."""
        return self.export(copy.deepcopy(checkpoint.model), settings, out_dir)

    @abstractmethod
    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        """Open a runner on an artifact file written by `export`."""


def open_runner(target: Target, artifact: Path, settings: TargetSettings) -> Runner:
    """The target's runner, with `extra.chunk_atoms` applied on the CPU."""
    runner = target.runner(artifact, settings)
    if settings.device == "cpu":
        runner.chunk_atoms = int(settings.extra.get("chunk_atoms", 0))
    return runner


_REGISTRY: dict[str, Target] = {}
T = TypeVar("T", bound=type)


def register(cls: T) -> T:
    """Class decorator: make a Target subclass available by its `name`."""
    if not cls.name or cls.defaults.target != cls.name:
        raise TypeError(f"{cls.__name__}: a target needs a name and defaults for that name")
    _REGISTRY[cls.name] = cls()
    return cls


def _discover() -> None:
    """Import every module of this package once (each registers its targets)."""
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{info.name}")


def registered() -> dict[str, Target]:
    _discover()
    return dict(_REGISTRY)


def get_target(name: str) -> Target:
    targets = registered()
    if name not in targets:
        raise UserInputError(f"unknown target '{name}': choose one of {', '.join(targets)}, or 'all'")
    return targets[name]


def target_names(spec: str) -> list[str]:
    """'all' -> every registered target; 'a,b' -> those names (each must exist)."""
    if spec.strip() == "all":
        return list(registered())
    names = list(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))
    if not names:
        raise UserInputError("no targets given")
    for name in names:
        get_target(name)
    return names


class ModuleRunner(Runner):
    """Calls a module or function of the four input tensors on one device (eager, TorchScript)."""

    def __init__(self, call: Callable[..., tuple[torch.Tensor, ...]], device: str) -> None:
        self.call = call
        self.device = device

    def infer_impl(self, inputs: GraphInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        energies, forces, virials = self.call(*inputs.to(self.device).tensors())
        return energies, forces, virials
