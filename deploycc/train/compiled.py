"""The training step's energies and their gradient from one `torch.compile`d function (`--compile`).

The force loss differentiates forces that are themselves a gradient.  Compiling the model's forward alone
fails there: AOTAutograd does not support a double backward (torch 2.13).  Compiling energy and gradient
together, as one `torch.func.grad_and_value` function of the edge vectors, turns the force loss's backward
into an ordinary first-order backward through the compiled graph, which AOTAutograd does support, and
lets inductor fuse the forward and the inner backward.  `lab/compile_train_step.py` measures the gain and
checks the gradients against eager ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import MissingDependencyError


class CompiledEnergyGrad:
    """`(numbers, vectors, neighbours, reverse) -> (energies [A], dE/dvectors [A, M, 3])` of `model`,
    differentiable with respect to the model's parameters (their tensors are the model's own, so optimiser
    steps are seen).  Shapes vary batch to batch, so it compiles with dynamic shapes."""

    def __init__(self, model: nn.Module, backend: str = "inductor") -> None:
        self.model = model
        self.backend = backend
        self._compiled = torch.compile(self._energies_and_grad, backend=backend, dynamic=True)
        self._checked = False

    def _total(self, vectors: torch.Tensor, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
               numbers: torch.Tensor, neighbours: torch.Tensor, reverse: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        energies = torch.func.functional_call(self.model, (params, buffers), (numbers, vectors, neighbours, reverse))
        return energies.sum(), energies

    def _energies_and_grad(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                           numbers: torch.Tensor, vectors: torch.Tensor, neighbours: torch.Tensor,
                           reverse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grad, (_, energies) = torch.func.grad_and_value(self._total, has_aux=True)(vectors, params, buffers, numbers,
                                                                                 neighbours, reverse)
        return energies, grad

    def __call__(self, numbers: torch.Tensor, vectors: torch.Tensor, neighbours: torch.Tensor,
                 reverse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = dict(self.model.named_parameters())
        buffers = dict(self.model.named_buffers())
        if self._checked:
            return self._compiled(params, buffers, numbers, vectors.detach(), neighbours, reverse)
        try:  # the first call compiles: a machine without a working compiler fails here, in one line
            out = self._compiled(params, buffers, numbers, vectors.detach(), neighbours, reverse)
        except Exception as exc:  # noqa: BLE001 - inductor raises many kinds; the message says which
            text = " ".join(str(exc).split())[:300]
            raise MissingDependencyError(f"--compile: torch.compile ({self.backend}) failed on the training step: "
                                         f"{type(exc).__name__}: {text}; train without --compile") from None
        self._checked = True
        return out

    def __getstate__(self) -> Any:  # a compiled function does not pickle; nothing should try
        raise TypeError("CompiledEnergyGrad is not picklable: make a new one in the process that trains")
