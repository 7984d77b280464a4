"""ONNX: the joint energies+forces+virials graph, run by ONNX Runtime (CPU, or CUDA with I/O binding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import MissingDependencyError
from ..model import StudentModel
from .base import INPUT_NAMES, Exported, GraphInputs, Runner, Target, register
from .onnx_export import export_onnx
from .settings import MemoryModel, TargetSettings


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("the onnx target needs onnxruntime: pip install onnxruntime") from None
    return onnxruntime


def cuda_provider_available() -> bool:
    try:
        return "CUDAExecutionProvider" in _ort().get_available_providers()
    except MissingDependencyError:
        return False


class OrtRunner(Runner):
    """ONNX Runtime session; on CUDA, inputs and outputs stay in torch CUDA tensors (I/O binding)."""

    def __init__(self, path: Path, device: str, threads: int | None = None) -> None:
        ort = _ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Grow the arena by what is asked, not by powers of two, and plan no memory pattern (one block for the
        # whole graph): each otherwise roughly doubles the peak of large systems; neither costs time
        # (measured with lab/ab_onnx.py).
        options.add_session_config_entry("session.arena_extend_strategy", "kSameAsRequested")
        options.enable_mem_pattern = False
        if device.startswith("cuda"):
            index = torch.device(device).index or 0
            # TF32 would cost ~1e-3 relative error: keep fp32 artifacts fp32.
            providers = [("CUDAExecutionProvider", {"device_id": index, "use_tf32": 0})]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.device = device
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.cutoff = float(self.session.get_modelmeta().custom_metadata_map.get("cutoff", 0.0))

    @property
    def threads(self) -> int:
        return int(self.session.get_session_options().intra_op_num_threads)

    def infer_impl(self, inputs: GraphInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.device.startswith("cuda"):
            return self._bound(inputs)
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(INPUT_NAMES, inputs.tensors())}
        energies, forces, virials = (torch.from_numpy(out) for out in self.session.run(None, feeds))
        return energies, forces, virials

    def _bound(self, inputs: GraphInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs = inputs.to(self.device)
        a = inputs.atoms
        shapes = {"energies": (a,), "forces": (a, 3), "virials": (a, 3, 3)}
        outputs = {name: torch.empty(shapes[name], device=self.device, dtype=torch.float32)
                   for name in self.output_names}
        index = torch.device(self.device).index or 0
        binding = self.session.io_binding()
        for name, tensor in zip(INPUT_NAMES, inputs.tensors()):
            tensor = tensor.contiguous()
            kind = np.int64 if tensor.dtype == torch.int64 else np.float32
            binding.bind_input(name, "cuda", index, kind, tuple(tensor.shape), tensor.data_ptr())
        for name, tensor in outputs.items():
            binding.bind_output(name, "cuda", index, np.float32, tuple(tensor.shape), tensor.data_ptr())
        self.session.run_with_iobinding(binding)
        return outputs["energies"], outputs["forces"], outputs["virials"]


def onnx_availability(settings: TargetSettings) -> str | None:
    """Why ONNX export or ONNX Runtime cannot work here (None when they can)."""
    try:
        _ort()
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except (MissingDependencyError, ImportError) as exc:
        return f"missing package ({exc}); pip install onnx onnxscript onnxruntime"
    if settings.device.startswith("cuda") and not cuda_provider_available():
        return "ONNX Runtime has no CUDA provider here; pip install 'deploycc[gpu]' (onnxruntime-gpu)"
    return None


@register
class OnnxTarget(Target):
    name = "onnx"
    artifact_file = "model.onnx"
    description = "simplified ONNX (energies, forces and virials in one graph) on ONNX Runtime"
    devices = ("cpu", "cuda")
    # chunk_atoms: batches of molecules run in calls of ~8 molecules (measured fastest on 2 CPU threads).
    defaults = TargetSettings(target="onnx", memory=MemoryModel(base=0.5e9, per_slot=3.6e3), extra={"chunk_atoms": 256})

    def availability(self, settings: TargetSettings) -> str | None:
        return onnx_availability(settings) or super().availability(settings)

    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        path = out_dir / self.artifact_file
        return Exported(path, export_onnx(model, settings, path))

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        return OrtRunner(artifact, settings.device, settings.extra.get("threads"))
