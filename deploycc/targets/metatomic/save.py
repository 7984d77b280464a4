"""Write a student as a metatomic AtomisticModel file (capabilities, metadata, TorchScript)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata, ModelOutput

from ...model import StudentModel
from ..base import Exported
from ..settings import TargetSettings
from .module import MetatomicStudent


def atomic_types(model: StudentModel, elements: list[int] | None) -> list[int]:
    """The atomic numbers the artifact declares (an engine refuses others): the checkpoint's elements when
    known, else every number the embedding covers, as the other targets accept."""
    if elements:
        return sorted(int(z) for z in elements)
    return list(range(1, int(model.config.max_z) + 1))


def capabilities(model: StudentModel, elements: list[int] | None, device: str) -> ModelCapabilities:
    """Energy in eV over Å, float64 interface; the interaction range is one cutoff per message pass (what a
    domain-decomposed engine needs as its ghost-atom shell)."""
    # "atom": per-atom energies on request, and their sums per system (what metatomic assumes of it).
    energy = ModelOutput(unit="eV", sample_kind="atom", explicit_gradients=[],
                         description="energy of the deploycc student, per atom or per system (eV)")
    devices = ["cuda", "cpu"] if device.startswith("cuda") else ["cpu"]
    return ModelCapabilities(outputs={"energy": energy}, atomic_types=atomic_types(model, elements),
                             interaction_range=float(model.cutoff) * model.config.num_interactions,
                             length_unit="angstrom", supported_devices=devices, dtype="float64")


def save_atomistic_model(model: StudentModel, settings: TargetSettings, path: Path, elements: list[int] | None,
                         name: str) -> Exported:
    """Export `model` to `path`; the notes record the declared types, range and neighbour-list request."""
    student = MetatomicStudent(copy.deepcopy(model).to(settings.device))
    config = model.config
    metadata = ModelMetadata(
        name=f"deploycc-{name}",
        description=(f"deploycc student '{name}' (PaiNN-style, hidden {config.hidden_dim}, "
                     f"{config.num_interactions} interactions, {config.num_rbf} radial features, "
                     f"cutoff {float(model.cutoff):g} Å); energies in eV, forces and stress by autograd"),
        authors=["deploycc"])
    caps = capabilities(model, elements, settings.device)
    wrapped = AtomisticModel(student.eval(), metadata, caps)
    wrapped.save(str(path))
    notes = {"atomic_types": list(caps.atomic_types), "interaction_range": caps.interaction_range,
             "neighbor_list": {"cutoff": student.cutoff, "full_list": True, "strict": True},
             "dtype": caps.dtype}
    return Exported(path, notes)
