"""The student as a metatomic model: systems and the engine's neighbour list in, energies out.

metatomic's interface (`forward(systems, outputs, selected_atoms) -> {"energy": TensorMap}`) is what LAMMPS
(`pair_style metatomic`), i-PI, ASE, torch-sim and others load.  The model requests one full neighbour list
at its cutoff from the engine, so an engine with domain decomposition hands each rank its own atoms plus
ghosts and the cost stays O(N).  Inside the graph the pair list is sorted into the padded slot layout the
student takes (deploycc/model/student.py).  Engines differentiate the energy themselves: the pair vectors
of the list carry the autograd links to positions and cell, so forces and stress are exact gradients.

The interface is float64 (positions, pair vectors, energies); the network runs in float32 on vectors formed
in float64, as every other deploycc artifact does.
"""

# No `from __future__ import annotations`: metatomic and TorchScript read these annotations as objects.
from typing import Dict, List, Optional, Tuple

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System

from ...model import StudentModel

class MetatomicStudent(torch.nn.Module):
    """metatomic `ModelInterface` around a StudentModel (per-system or per-atom energies in eV)."""

    def __init__(self, model: StudentModel) -> None:
        super().__init__()
        # Plain autograd: the engine's backward runs through the slot scatter below, and the scatter-free
        # custom backward of inference graphs is not scriptable.
        self.model = model.eval().set_recompute(False)
        self.cutoff = float(model.cutoff)
        self.neighbor_options = NeighborListOptions(cutoff=self.cutoff, full_list=True, strict=True,
                                                    requestor="deploycc")

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.neighbor_options]

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
        results: Dict[str, TensorMap] = {}
        if "energy" not in outputs or len(systems) == 0:
            return results
        per_atom = outputs["energy"].sample_kind == "atom"
        energies, system_index, atom_index = self.atom_energies(systems)
        keep = self.selection(system_index, atom_index, selected_atoms)
        dtype = systems[0].positions.dtype
        if per_atom:
            samples = Labels(["system", "atom"], torch.stack([system_index, atom_index], 1)[keep].to(torch.int32))
            values = energies[keep].to(dtype).unsqueeze(1)
        else:
            totals = torch.zeros(len(systems), dtype=energies.dtype, device=energies.device)
            totals = totals.index_add(0, system_index[keep], energies[keep])
            ids = torch.arange(len(systems), device=energies.device).unsqueeze(1)
            samples = Labels(["system"], ids.to(torch.int32))
            values = totals.to(dtype).unsqueeze(1)
        block = TensorBlock(values=values, samples=samples, components=torch.jit.annotate(List[Labels], []),
                            properties=Labels(["energy"], torch.zeros(1, 1, dtype=torch.int32, device=values.device)))
        results["energy"] = TensorMap(Labels(["_"], torch.zeros(1, 1, dtype=torch.int32, device=values.device)),
                                      [block])
        return results

    def atom_energies(self, systems: List[System]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-atom energies of all systems concatenated (float64), with each atom's system and index."""
        numbers: List[torch.Tensor] = []
        firsts: List[torch.Tensor] = []
        seconds: List[torch.Tensor] = []
        vectors: List[torch.Tensor] = []
        system_index: List[torch.Tensor] = []
        atom_index: List[torch.Tensor] = []
        offset = 0
        for k, system in enumerate(systems):
            n = len(system)
            pairs = system.get_neighbor_list(self.neighbor_options)
            columns = pairs.samples.values
            firsts.append(columns[:, 0].to(torch.int64) + offset)
            seconds.append(columns[:, 1].to(torch.int64) + offset)
            vectors.append(pairs.values.reshape(-1, 3))
            numbers.append(system.types.to(torch.int64))
            system_index.append(torch.full((n,), k, dtype=torch.int64, device=system.positions.device))
            atom_index.append(torch.arange(n, dtype=torch.int64, device=system.positions.device))
            offset += n
        slots, neighbours = to_slots(torch.cat(firsts), torch.cat(seconds), torch.cat(vectors), offset)
        weights = self.model.embedding.weight
        energies = self.model(torch.cat(numbers), slots.to(weights.dtype), neighbours, neighbours)
        return energies.to(torch.float64), torch.cat(system_index), torch.cat(atom_index)

    def selection(self, system_index: torch.Tensor, atom_index: torch.Tensor,
                  selected_atoms: Optional[Labels]) -> torch.Tensor:
        """Mask [A] of the atoms whose energies count (all, or the engine's `selected_atoms`)."""
        keep = torch.ones_like(system_index, dtype=torch.bool)
        if selected_atoms is None:
            return keep
        chosen = selected_atoms.values.to(torch.int64)
        stride = int(atom_index.max()) + 1 if atom_index.numel() > 0 else 1
        wanted = chosen[:, 0] * stride + chosen[:, 1]
        return torch.isin(system_index * stride + atom_index, wanted)


def to_slots(first: torch.Tensor, second: torch.Tensor, vectors: torch.Tensor, atoms: int,
             padding: float = 100.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """A full pair list (i, j, r_j - r_i) as padded slots: vectors [A, M, 3] and neighbours [A, M].

    Pairs are grouped by i (stable sort) and numbered within their group; padding slots point at the atom
    itself with a vector of length `padding` (Å), beyond every cutoff: zero envelope, zero gradients.  The vectors stay differentiable (index_put of the pair values)."""
    order = torch.argsort(first, stable=True)
    first, second, vectors = first[order], second[order], vectors[order]
    counts = torch.bincount(first, minlength=atoms)
    width = max(int(counts.max()) if counts.numel() > 0 else 0, 1)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(first.shape[0], device=first.device) - starts[first]
    padded = torch.zeros(atoms, width, 3, dtype=vectors.dtype, device=vectors.device)
    padded[:, :, 0] = padding
    padded = padded.index_put((first, slot), vectors)
    neighbours = torch.arange(atoms, device=first.device).unsqueeze(1).repeat(1, width)
    neighbours = neighbours.index_put((first, slot), second)
    return padded, neighbours
