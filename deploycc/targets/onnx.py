"""ONNX: the joint energy+forces graph, run by ONNX Runtime (CPU, or CUDA with I/O binding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import MissingDependencyError
from ..model import StudentModel
from .base import Exported, Runner, Target, register
from .onnx_export import INPUT_NAMES, PERIODIC_INPUT_NAMES, export_onnx
from .settings import TargetSettings


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
        if device.startswith("cuda"):
            index = torch.device(device).index or 0
            # TF32 would cost ~1e-3 relative error: keep fp32 artifacts fp32.
            providers = [("CUDAExecutionProvider", {"device_id": index, "use_tf32": 0})]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.device = device
        self.output_dtype = torch.float16 if self._output_is_fp16() else torch.float32
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]  # energy, forces[, virial]
        self.periodic = self.input_names == INPUT_NAMES + PERIODIC_INPUT_NAMES
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.cutoff = float(metadata.get("cutoff", 0.0))

    def _output_is_fp16(self) -> bool:
        return self.session.get_outputs()[1].type == "tensor(float16)"

    def run(self, numbers: torch.Tensor, positions: torch.Tensor, *periodic: torch.Tensor
            ) -> tuple[torch.Tensor, ...]:
        if not self.device.startswith("cuda"):
            feeds = {name: x.detach().cpu().numpy() for name, x in zip(self.input_names, (numbers, positions, *periodic))}
            return tuple(torch.from_numpy(out) for out in self.session.run(None, feeds))
        return self._predict_bound(numbers, positions, *periodic)

    def _predict_bound(self, numbers: torch.Tensor, positions: torch.Tensor, *periodic: torch.Tensor
                       ) -> tuple[torch.Tensor, ...]:
        numbers = numbers.to(self.device).contiguous()
        b, n = numbers.shape
        shapes = {"energy": (b,), "forces": (b, n, 3), "virial": (b, 3, 3)}
        outputs = {name: torch.empty(shapes[name], device=self.device, dtype=torch.float32)
                   for name in self.output_names}
        index = torch.device(self.device).index or 0
        binding = self.session.io_binding()
        binding.bind_input("numbers", "cuda", index, np.int64, tuple(numbers.shape), numbers.data_ptr())
        floats = [x.to(self.device, torch.float32).contiguous() for x in (positions, *periodic)]
        for name, tensor in zip(self.input_names[1:], floats):
            binding.bind_input(name, "cuda", index, np.float32, tuple(tensor.shape), tensor.data_ptr())
        for name, tensor in outputs.items():
            binding.bind_output(name, "cuda", index, np.float32, tuple(tensor.shape), tensor.data_ptr())
        self.session.run_with_iobinding(binding)
        return tuple(outputs.values())


class OnnxTarget(Target):
    name = "onnx"
    artifact_file = "model.onnx"
    description = "simplified ONNX (energy + forces in one graph) on ONNX Runtime"
    devices = ("cpu", "cuda")
    periodic = True

    def availability(self, settings: TargetSettings) -> str | None:
        try:
            _ort()
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except (MissingDependencyError, ImportError) as exc:
            return f"missing package ({exc}); pip install onnx onnxscript onnxruntime"
        if settings.device.startswith("cuda") and not cuda_provider_available():
            return "ONNX Runtime has no CUDA provider here; pip install 'deploycc[gpu]' (onnxruntime-gpu)"
        return super().availability(settings)

    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        path = out_dir / self.artifact_file
        notes = export_onnx(model, settings, path)
        return Exported(path, notes)

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        return OrtRunner(artifact, settings.device, settings.extra.get("threads"))


register(OnnxTarget())
