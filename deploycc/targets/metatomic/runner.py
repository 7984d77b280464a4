"""Run a metatomic artifact the way an engine does: systems, the model's requested neighbour lists (vesin),
energies from the model, forces and virials by autograd through positions and a strain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from metatomic.torch import ModelEvaluationOptions, ModelOutput, System, load_atomistic_model
from vesin.metatomic import neighbor_lists_for_model

from ...runtime.neighbours import NeighbourBatch
from ..base import GraphInputs, Prediction, Runner
from ..torchscript import SERIAL_ATOMS, intra_op_threads


class MetatomicRunner(Runner):
    """A loaded AtomisticModel; `infer` takes the request's structures, not the slot layout."""

    slot_layout = False

    def __init__(self, artifact: Path, device: str, check_consistency: bool = False) -> None:
        self.device = device
        self.model = load_atomistic_model(str(artifact)).to(device)
        # No Verlet skin: a runner sees unrelated structures from call to call, nothing to reuse.
        self.calculators = neighbor_lists_for_model("angstrom", self.model, skin=0.0)
        self.options = ModelEvaluationOptions(length_unit="angstrom",
                                              outputs={"energy": ModelOutput(unit="eV", sample_kind="system")})
        self.check_consistency = check_consistency

    def infer(self, batch: NeighbourBatch) -> Prediction:
        """Energies, forces and virials (-dE/d strain) of every structure of `batch`, float64."""
        systems, leaves, strains = [], [], []
        for k in range(batch.structures):
            system, positions, strain = self.system(batch, k)
            systems.append(system)
            leaves.append(positions)
            strains.append(strain)
        for calculator in self.calculators:
            calculator.add_neighbor_list(systems, copy=True)
        serial = self.device.startswith("cpu") and batch.atoms <= SERIAL_ATOMS
        # As the TorchScript runner (targets/torchscript.py): one plan, no profiling runs; small calls on one
        # thread, where a two-thread OpenMP team stalls whenever the second core is busy.
        with torch.enable_grad(), torch.jit.optimized_execution(False), intra_op_threads(1 if serial else None):
            result = self.model(systems, self.options, check_consistency=self.check_consistency)
            energies = result["energy"].block().values.reshape(-1)
            grads = torch.autograd.grad([energies.sum()], leaves + strains)
        forces = -torch.cat(grads[: len(leaves)]).detach()
        virials = -torch.stack(grads[len(leaves):]).detach()
        return Prediction(energies.detach().double().cpu().numpy(), forces.double().cpu().numpy(),
                          virials.double().cpu().numpy(), batch.offsets)

    def system(self, batch: NeighbourBatch, k: int) -> tuple[System, torch.Tensor, torch.Tensor]:
        """Structure k as a metatomic System whose positions and cell are strained by an identity leaf."""
        lo, hi = int(batch.offsets[k]), int(batch.offsets[k + 1])
        positions = torch.tensor(batch.positions[lo:hi], dtype=torch.float64, device=self.device,
                                 requires_grad=True)
        strain = torch.eye(3, dtype=torch.float64, device=self.device, requires_grad=True)
        pbc = torch.tensor(np.asarray(batch.pbc[k], dtype=bool), device=self.device)
        cell = torch.tensor(batch.cells[k], dtype=torch.float64, device=self.device)
        cell = cell * pbc.unsqueeze(1)  # metatomic: rows of non-periodic directions are zero
        types = torch.tensor(batch.numbers[lo:hi], dtype=torch.int32, device=self.device)
        return System(types=types, positions=positions @ strain, cell=cell @ strain, pbc=pbc), positions, strain

    def infer_impl(self, inputs: GraphInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError("a metatomic artifact takes systems and the engine's neighbour list, "
                                  "not the slot layout: call infer()")
