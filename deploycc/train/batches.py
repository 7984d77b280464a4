"""Training batches on the neighbour layout, the distillation loss and the evaluation metrics.

Frames do not move during training, so each split's neighbour lists are computed once (`Prepared`) and a
batch only assembles them (`runtime.neighbours.assemble`).  Training differentiates the forces again (the
force loss), so the model runs its plain-autograd contractions (`StudentModel.set_recompute(False)`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..data.schema import Structures
from ..model import StudentModel, energy_forces_virials
from ..model.forces import forces_and_virials
from ..runtime.neighbours import HalfList, Structure, assemble, half_list, structures_of


def size_batches(sizes: Sequence[int], batch_size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Group indices of similar size into batches (similar neighbour counts); shuffled when `rng` is given."""
    sizes = np.asarray(sizes, dtype=np.float64)
    key = sizes + (rng.uniform(-2.0, 2.0, size=len(sizes)) if rng is not None else 0.0)
    order = np.argsort(key, kind="stable")
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


@dataclass
class Metrics:
    energy_mae_per_atom: float
    force_mae: float
    force_rmse: float
    structures: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class Prepared:
    """One split with its neighbour lists."""

    data: Structures
    structures: list[Structure]
    halves: list[HalfList]

    @classmethod
    def of(cls, data: Structures, cutoff: float) -> "Prepared":
        structures = structures_of(data)
        return cls(data, structures, [half_list(s, cutoff) for s in structures])

    def __len__(self) -> int:
        return len(self.structures)

    def sizes(self) -> list[int]:
        return [len(s) for s in self.structures]

    def batch(self, idx: np.ndarray, device: str) -> tuple[torch.Tensor, ...]:
        """numbers, vectors, neighbours, reverse, structure index per atom, reference forces [A, 3] and
        energies [S] (float64) of the structures `idx`."""
        batch = assemble([self.structures[i] for i in idx], [self.halves[i] for i in idx])
        system = np.repeat(np.arange(len(idx)), np.diff(batch.offsets))
        forces = np.concatenate([self.data.forces[i] for i in idx])
        tensors = (torch.from_numpy(batch.numbers), torch.from_numpy(batch.vectors()).float(),
                   torch.from_numpy(batch.neighbours), torch.from_numpy(batch.reverse), torch.from_numpy(system),
                   torch.from_numpy(forces).float(), torch.tensor(self.data.energies[idx], dtype=torch.float64))
        return tuple(t.to(device) for t in tensors)


def predict_batch(model: StudentModel, batch: tuple[torch.Tensor, ...], count: int, create_graph: bool,
                  compiled: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Total energies [S], atoms per structure [S] and forces [A, 3] of a prepared batch; with `compiled` (a
    train.compiled.CompiledEnergyGrad of `model`) energies and their gradient come from it."""
    numbers, vectors, neighbours, reverse, system = batch[:5]
    if compiled is not None:
        energies, grad = compiled(numbers, vectors, neighbours, reverse)
        forces, _virials = forces_and_virials(grad, vectors, reverse)
    else:
        energies, forces, _virials = energy_forces_virials(model, numbers, vectors, neighbours, reverse,
                                                           create_graph=create_graph)
    totals = torch.zeros(count, dtype=energies.dtype, device=energies.device).index_add(0, system, energies)
    atoms = torch.bincount(system, minlength=count).to(energies.dtype)
    return totals, atoms, forces


def distillation_loss(model: StudentModel, batch: tuple[torch.Tensor, ...], count: int, energy_weight: float,
                      force_weight: float, angular_weight: float = 0.0, structures: int | None = None,
                      atoms: int | None = None, compiled: Callable | None = None) -> torch.Tensor:
    """energy_weight * MSE(energy per atom) + force_weight * MSE(force components) [+ angular term].

    With `structures` and `atoms` (those of a larger batch this one is a part of) the squared errors are
    summed and divided by those counts instead: the parts' losses then add up to the whole batch's."""
    ref_forces, ref_energies = batch[5], batch[6]
    energy, n_atoms, forces = predict_batch(model, batch, count, create_graph=True, compiled=compiled)
    e_err = (energy.double() - ref_energies).float() / n_atoms
    if structures is None or atoms is None:
        loss = energy_weight * (e_err**2).mean() + force_weight * ((forces - ref_forces) ** 2).mean()
    else:
        loss = (energy_weight * (e_err**2).sum() / structures
                + force_weight * ((forces - ref_forces) ** 2).sum() / (forces.shape[-1] * atoms))
    if angular_weight > 0:
        cos = torch.nn.functional.cosine_similarity(forces, ref_forces, dim=-1, eps=1e-6)
        loss = loss + angular_weight * ((1 - cos).mean() if atoms is None else (1 - cos).sum() / atoms)
    return loss


def evaluate(model: StudentModel, data: Structures | Prepared, device: str = "cpu", batch_size: int = 64) -> Metrics:
    """Energy MAE per atom and force MAE/RMSE (per component) against the data's labels."""
    prepared = data if isinstance(data, Prepared) else Prepared.of(data, model.cutoff)
    e_abs, f_abs, f_sq, n_comp = [], 0.0, 0.0, 0
    for idx in size_batches(prepared.sizes(), batch_size):
        batch = prepared.batch(idx, device)
        energy, atoms, forces = predict_batch(model, batch, len(idx), create_graph=False)
        e_abs.append(((energy.double() - batch[6]).abs() / atoms.double()).cpu())
        diff = (forces - batch[5]).double()
        f_abs += diff.abs().sum().item()
        f_sq += (diff**2).sum().item()
        n_comp += diff.numel()
    return Metrics(float(torch.cat(e_abs).mean()), f_abs / n_comp, math.sqrt(f_sq / n_comp), len(prepared))
