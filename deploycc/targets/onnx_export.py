"""One flat ONNX graph computing per-atom energies, forces and virials: make_fx of the energy and its gradient,
then the dynamo exporter with dynamic atom and slot axes, simplification, and onnx.checker.

`torch.export` and both ONNX exporters fail on `autograd.grad` inside a forward, so the backward pass is
first traced into an ATen graph by `make_fx` (symbolic shapes, core ATen decompositions).  The model runs
its scatter-free contractions (deploycc/model/pairs.py), so the graph holds Gather, MatMul and reductions
but no ScatterND/ScatterElements: TensorRT lacks scatter-add, and ONNX Runtime's was seen to race on
duplicate indices with two threads.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import MissingDependencyError
from ..model import energy_forces_virials
from .base import INPUT_NAMES, OUTPUT_NAMES
from .settings import TargetSettings

# Example sizes of the traced graph: different from each other and from every fixed size of the model
# (3, K, 3K, F): symbolic tracing gives equal sizes one symbol, so a coincidence would specialise an axis.
EXAMPLE_ATOMS, EXAMPLE_SLOTS = 13, 7


class _Graph(nn.Module):
    """The traced function with named inputs (the exporters name inputs after forward's parameters)."""

    def __init__(self, traced: nn.Module) -> None:
        super().__init__()
        self.traced = traced  # not `graph`: that name collides with GraphModule.graph during export

    def forward(self, numbers: torch.Tensor, vectors: torch.Tensor, neighbours: torch.Tensor,
                reverse: torch.Tensor):
        return self.traced(numbers, vectors, neighbours, reverse)


def example_inputs(device: str, atoms: int = EXAMPLE_ATOMS, slots: int = EXAMPLE_SLOTS) -> tuple[torch.Tensor, ...]:
    """A consistent neighbour layout of `atoms` atoms with `slots` slots each (every slot a real pair of a
    ring, so reverse indices are valid)."""
    generator = torch.Generator().manual_seed(0)
    index = torch.arange(atoms)
    offsets = torch.arange(slots) - slots // 2
    offsets = offsets + (offsets >= 0).long()  # nonzero ring offsets: -3..-1, 1..4 for 7 slots
    neighbours = (index[:, None] + offsets[None, :]) % atoms
    partner = {int(o): k for k, o in enumerate(offsets)}
    rev_slot = torch.tensor([partner.get(-int(o), k) for k, o in enumerate(offsets)])
    reverse = neighbours * slots + rev_slot[None, :]
    numbers = torch.tensor([6, 1, 1, 8, 7, 1, 6, 6, 1, 16, 1, 8, 1] * (atoms // 13 + 1))[:atoms]
    vectors = torch.randn(atoms, slots, 3, generator=generator) * 1.5
    return tuple(t.to(device) for t in (numbers, vectors, neighbours, reverse))


def trace_energy_forces(model: nn.Module, device: str) -> nn.Module:
    """An FX graph module (numbers, vectors, neighbours, reverse) -> (energies, forces, virials), backward
    inlined, symbolic atom and slot sizes."""
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx

    model = model.to(device).eval().set_recompute(True)
    for parameter in model.parameters():
        parameter.requires_grad_(False)

    def step(numbers: torch.Tensor, vectors: torch.Tensor, neighbours: torch.Tensor, reverse: torch.Tensor):
        return energy_forces_virials(model, numbers, vectors, neighbours, reverse)

    with torch.enable_grad():
        graph = make_fx(step, tracing_mode="symbolic", decomposition_table=core_aten_decompositions(),
                        _allow_non_fake_inputs=True)(*example_inputs(device))
    return _Graph(graph)


def dynamic_axes() -> dict[str, dict[int, object]]:
    """Dynamic atom and slot axes of every input."""
    atoms = torch.export.Dim("atoms", min=1, max=1 << 26)
    slots = torch.export.Dim("slots", min=1, max=4096)
    return {"numbers": {0: atoms}, "vectors": {0: atoms, 1: slots}, "neighbours": {0: atoms, 1: slots},
            "reverse": {0: atoms, 1: slots}}


def simplify(model_proto):
    """onnxsim (onnxslim as fallback); returns (model, tool name or None)."""
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model_proto)
        if ok:
            return simplified, f"onnxsim {getattr(onnxsim, '__version__', '')}".strip()
    except ImportError:
        pass
    try:
        import onnxslim

        return onnxslim.slim(model_proto), "onnxslim"
    except ImportError:
        return model_proto, None


def export_onnx(model: nn.Module, settings: TargetSettings, path: Path) -> dict[str, str | None]:
    """Write the joint energies+forces+virials ONNX graph to `path`; returns notes for the manifest."""
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError("the onnx target needs onnx: pip install onnx onnxscript") from None
    graph = trace_energy_forces(model, settings.device)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph, example_inputs(settings.device), dynamo=True, opset_version=settings.opset,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic_axes(),
            optimize=True, verbose=False)
    proto = program.model_proto
    tool = None
    if settings.simplify:
        proto, tool = simplify(proto)
    onnx.helper.set_model_props(proto, {"cutoff": repr(float(model.cutoff)), "layout": "neighbour-slots"})
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return {"simplifier": tool, "opset": str(settings.opset)}
