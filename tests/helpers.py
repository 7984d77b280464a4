"""Shared test helpers, built in code and seeded: random students, random structures, and evaluation of a
model on lists of structures through the neighbour layout (float64 by default)."""

from __future__ import annotations

import copy

import numpy as np
import torch

from deploycc.model import PRESET_CONFIGS, StudentModel, energy_forces_virials
from deploycc.runtime.neighbours import Structure, neighbour_batch
from deploycc.targets.base import GraphInputs, Prediction


def make_model(seed: int = 0, preset: str = "tiny") -> StudentModel:
    """A random model with a realistic output scale and H/C/N/O references (so parity tests are sensitive)."""
    torch.manual_seed(seed)
    model = StudentModel(PRESET_CONFIGS[preset])
    with torch.no_grad():
        model.scale.fill_(2.0)
        model.element_ref[1], model.element_ref[6] = -13.6, -1030.0
        model.element_ref[7], model.element_ref[8] = -1480.0, -2040.0
    return model.eval()


def make_periodic_model(seed: int = 0, preset: str = "metals-tiny") -> StudentModel:
    """A random model with metal element references."""
    torch.manual_seed(seed)
    model = StudentModel(PRESET_CONFIGS[preset])
    with torch.no_grad():
        model.scale.fill_(0.5)
        model.element_ref[13], model.element_ref[29], model.element_ref[79] = -3.0, -3.5, -3.8
    return model.eval()


def tiny_model(seed: int = 0, ref_scale: float = 1000.0, scale: float = 1.0, shift: float = 0.0) -> StudentModel:
    """A random tiny student with large random element references (as real total energies have)."""
    torch.manual_seed(seed)
    model = StudentModel(PRESET_CONFIGS["tiny"]).eval()
    with torch.no_grad():
        model.element_ref.copy_(-torch.rand(model.element_ref.shape) * ref_scale)
        model.scale.fill_(scale)
        model.shift.fill_(shift)
    return model


def random_molecule(rng: np.random.Generator, n_atoms: int, elements=(1, 1, 6, 7, 8), min_distance: float = 0.95
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers and positions with every pair at least `min_distance` Angstrom apart."""
    numbers = rng.choice(elements, size=n_atoms)
    positions: list[np.ndarray] = []
    while len(positions) < n_atoms:
        candidate = rng.uniform(-1.0, 1.0, 3) * (1.0 + 0.45 * n_atoms ** (1 / 3))
        if all(np.linalg.norm(candidate - p) >= min_distance for p in positions):
            positions.append(candidate)
    return numbers.astype(np.int64), np.array(positions)


def molecules(sizes: list[int], seed: int = 1) -> list[Structure]:
    """Random molecules (elements 1..9) of the given sizes."""
    rng = np.random.default_rng(seed)
    return [Structure.of(*random_molecule(rng, n, elements=tuple(range(1, 10)), min_distance=0.8)) for n in sizes]


def periodic_structures(seed: int = 0) -> list:
    """Small periodic structures of every kind: cells narrower than twice the cutoff (many images), a
    triclinic cell, an alloy, a slab periodic in-plane only, a cluster (ase.Atoms)."""
    from ase import Atoms
    from ase.build import bulk, fcc111

    rng = np.random.default_rng(seed)
    cu4 = bulk("Cu", "fcc", a=3.61, cubic=True)
    prim = bulk("Au", "fcc", a=4.08)
    tri = Atoms("AlCu", scaled_positions=[[0, 0, 0], [0.4, 0.55, 0.5]],
                cell=[[4.2, 0, 0], [1.3, 4.0, 0], [0.7, 0.9, 3.9]], pbc=True)
    alloy = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 2))
    alloy.numbers[rng.random(len(alloy)) < 0.4] = 79
    slab = fcc111("Al", size=(2, 2, 3), vacuum=4.0)
    slab.pbc = (True, True, False)
    cluster = Atoms("Cu13", positions=bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2).positions[:13])
    structures = [cu4, prim, tri, alloy, slab, cluster]
    for atoms in structures:
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
    return structures


def structure(item) -> Structure:
    """A Structure from a Structure, an ase.Atoms or a (numbers, positions) pair."""
    if isinstance(item, Structure):
        return item
    if isinstance(item, tuple):
        return Structure.of(*item)
    return Structure.from_atoms(item)


def evaluate(model: StudentModel, items, dtype: torch.dtype = torch.float64, recompute: bool = False,
             skin: float = 0.0) -> Prediction:
    """Per-structure energies and virials and per-atom forces of `model` on `items` (one batch), computed in
    `dtype` (the model is cast to it)."""
    structures = [structure(x) for x in items]
    batch = neighbour_batch(structures, model.cutoff, skin)
    inputs = GraphInputs.from_batch(batch, dtype)
    model = copy.deepcopy(model).to(dtype).set_recompute(recompute)
    energies, forces, virials = energy_forces_virials(model, *inputs.tensors())
    return Prediction(batch.per_structure(energies.double().numpy()), forces.double().numpy(),
                      batch.per_structure(virials.double().numpy()), batch.offsets)


def energy(model: StudentModel, item, dtype: torch.dtype = torch.float64) -> float:
    """Total energy of one structure."""
    return float(evaluate(model, [item], dtype).energies[0])


def energy_forces(model: StudentModel, item, dtype: torch.dtype = torch.float64) -> tuple[float, np.ndarray]:
    """Total energy and forces [n, 3] of one structure."""
    result = evaluate(model, [item], dtype)
    return float(result.energies[0]), result.forces_of(0)


def drifting_target(name: str):
    """Register (and return) a target that exports a real eager artifact of a *different* model (its scale
    times 1.01): parity must catch it."""
    from dataclasses import replace

    from deploycc.targets.base import Exported, register
    from deploycc.targets.eager import EagerTarget

    class DriftingTarget(EagerTarget):
        defaults = replace(EagerTarget.defaults, target=name)

        def export(self, model, settings, out_dir) -> Exported:
            with torch.no_grad():
                model.scale.mul_(1.01)
            return super().export(model, settings, out_dir)

    DriftingTarget.name = name
    return register(DriftingTarget)
