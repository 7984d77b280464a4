"""One flat ONNX graph computing energy and forces (and the virial, for periodic models): make_fx of energy
+ its gradient, then the dynamo exporter with dynamic batch and atom axes, simplification, and onnx.checker.

`torch.export` and both ONNX exporters fail on `autograd.grad` inside a forward, so the backward pass is
first traced into an ATen graph by `make_fx` (symbolic shapes, core ATen decompositions).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import MissingDependencyError
from ..model.layers import columns_by_matmul
from ..model.stress import energy_forces_virial
from .settings import TargetSettings

INPUT_NAMES = ["numbers", "positions"]
PERIODIC_INPUT_NAMES = ["cell", "pbc", "shifts"]
OUTPUT_NAMES = ["energy", "forces"]
PERIODIC_OUTPUT_NAMES = ["virial"]  # -dE/d(strain) [B, 3, 3], eV


class _Graph(nn.Module):
    def __init__(self, traced: nn.Module) -> None:
        super().__init__()
        self.traced = traced  # not `graph`: that name collides with GraphModule.graph during export

    def forward(self, numbers: torch.Tensor, positions: torch.Tensor, *periodic: torch.Tensor):
        return self.traced(numbers, positions, *periodic)


class _PeriodicGraph(_Graph):
    """Explicit periodic signature (the exporters name inputs after forward's parameters)."""

    def forward(self, numbers: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
                shifts: torch.Tensor):
        return self.traced(numbers, positions, cell, pbc, shifts)


def is_periodic(model: nn.Module) -> bool:
    return bool(getattr(model, "periodic", False))


def trace_energy_forces(model: nn.Module, device: str) -> nn.Module:
    """An FX graph module (numbers, positions[, cell, pbc, shifts]) -> (energy, forces), backward inlined."""
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx

    model = model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)

    def energy_forces(numbers: torch.Tensor, positions: torch.Tensor, *periodic: torch.Tensor):
        if periodic:  # the virial too: one backward over positions and a zero strain (deploycc/model/stress.py)
            return energy_forces_virial(model, numbers, positions, *periodic)
        pos = positions.clone().requires_grad_(True)
        energy = model(numbers, pos)
        (grad,) = torch.autograd.grad(energy.sum(), pos)
        return energy, -grad

    # Example sizes must differ from each other and from 3 (the xyz axis): symbolic tracing gives equal
    # sizes one symbol, so a batch of 3 would be specialised to the static coordinate size.
    numbers = torch.tensor([[6, 1, 1, 8, 7, 1, 0], [6, 6, 1, 1, 1, 1, 9]], device=device)
    positions = torch.randn(2, 7, 3, device=device) * 1.5
    periodic = _periodic_examples(2, 5, device) if is_periodic(model) else ()
    with torch.enable_grad():
        graph = make_fx(energy_forces, tracing_mode="symbolic", decomposition_table=core_aten_decompositions(),
                        _allow_non_fake_inputs=True)(numbers, positions, *periodic)
    return _PeriodicGraph(graph) if periodic else _Graph(graph)


def _periodic_examples(batch: int, shifts: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cells, pbc flags and `shifts` lattice shifts (a count unlike every other example size)."""
    cell = (torch.eye(3, device=device) * 6.0).expand(batch, 3, 3).contiguous()
    pbc = torch.ones(batch, 3, device=device)
    offsets = torch.tensor([[0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                           dtype=torch.float32, device=device)
    return cell, pbc, offsets[:shifts].contiguous()


def dynamic_axes(periodic: bool = False) -> dict[str, dict[int, object]]:
    """Dynamic batch and atom axes of every input (and the lattice-shift axis of periodic graphs)."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    atoms = torch.export.Dim("atoms", min=1, max=8192)
    axes: dict[str, dict[int, object]] = {"numbers": {0: batch, 1: atoms}, "positions": {0: batch, 1: atoms}}
    if periodic:
        axes.update({"cell": {0: batch}, "pbc": {0: batch}, "shifts": {0: torch.export.Dim("shifts", min=1, max=729)}})
    return axes


def example_inputs(device: str, periodic: bool = False) -> tuple[torch.Tensor, ...]:
    """Export examples: two structures of five atoms (sizes differ from 3, see trace_energy_forces)."""
    numbers = torch.tensor([[6, 1, 1, 8, 7], [8, 1, 1, 0, 0]], device=device)
    extra = _periodic_examples(2, 4, device) if periodic else ()
    return (numbers, torch.randn(2, 5, 3, device=device), *extra)


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
    """Write the joint energy+forces ONNX graph to `path`; returns notes for the manifest."""
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError("the onnx target needs onnx: pip install onnx onnxscript") from None
    periodic = is_periodic(model)
    with columns_by_matmul(model):
        graph = trace_energy_forces(model, settings.device)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph, example_inputs(settings.device, periodic), dynamo=True, opset_version=settings.opset,
            input_names=INPUT_NAMES + (PERIODIC_INPUT_NAMES if periodic else []),
            output_names=OUTPUT_NAMES + (PERIODIC_OUTPUT_NAMES if periodic else []),
            dynamic_shapes=dynamic_axes(periodic), optimize=True, verbose=False)
    proto = program.model_proto
    tool = None
    if settings.simplify:
        proto, tool = simplify(proto)
    onnx.helper.set_model_props(proto, {"cutoff": repr(float(model.cutoff)), "periodic": str(periodic)})
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return {"simplifier": tool, "opset": str(settings.opset)}
