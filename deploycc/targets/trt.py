"""TensorRT: a serialized engine built from the fp16-mixed ONNX graph (float16 pair tensors and
neighbour sums inside a float32 model; see deploycc/model/mixed.py).

Build: onnx-fp16 export -> pre-flight (trt_preflight, pure Python) -> trt.OnnxParser into a *strongly
typed* network -> builder config (workspace limit, timing cache, one optimization profile per
(batch, atoms) range) -> builder.build_serialized_network.  Strongly typed on every TensorRT version: the
precision is the ONNX graph's own (the casts of the mixed model), so no FP16 builder flag is set.  That
flag is the only way on TensorRT >= 11, where weakly typed networks are gone (the STRONGLY_TYPED creation
flag is accepted and ignored there), and it exists on TensorRT 10, so both build the same network.

Files: model.engine (the artifact), timing.cache beside it (reused by the next build on this machine), and
engine.json with the TensorRT version, GPU name and compute capability of the build: an engine only runs
on the TensorRT version and GPU model it was built for, so the runner refuses any other.

Profiles: the settings' batch and atoms ranges (1/32/256 and 1/32/128 by default); more with
`[[extra.profiles]]` tables holding `batch = [min, opt, max]` and `atoms = [min, opt, max]`.  Workspace:
`extra.workspace_gib` (default 8).  `tensorrt` is imported inside functions only.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..errors import ArtifactError, DeployccError, MissingDependencyError, UserInputError
from ..model import StudentModel
from .base import Exported, Runner, Target, register
from .onnx_fp16 import export_mixed_onnx
from .settings import Profile, TargetSettings
from .trt_preflight import preflight

ENGINE_INFO = "engine.json"
TIMING_CACHE = "timing.cache"
ONNX_FILE = "model.onnx"
NOT_INSTALLED = "TensorRT is not installed: pip install 'deploycc[trt]' (NVIDIA's index) on a machine with an NVIDIA GPU"
COMPAT_KEYS = (("tensorrt", "TensorRT"), ("gpu", "GPU"), ("compute_capability", "compute capability"))


class TensorRTBuildError(DeployccError):
    """TensorRT could not parse the ONNX graph or build an engine from it."""


def _trt():
    try:
        import tensorrt
    except ImportError:
        raise MissingDependencyError(NOT_INSTALLED) from None
    return tensorrt


def check_engine_compatibility(recorded: dict[str, Any], current: dict[str, Any]) -> None:
    """Raise ArtifactError (one line) unless TensorRT version, GPU and compute capability all match."""
    for key, label in COMPAT_KEYS:
        if key not in recorded:
            raise ArtifactError(f"the engine's {ENGINE_INFO} lacks the {label} it was built with: rebuild it")
    diffs = [f"{label} {recorded[key]} != {current.get(key)}" for key, label in COMPAT_KEYS
             if str(recorded[key]) != str(current.get(key))]
    if diffs:
        raise ArtifactError("TensorRT engine was built for another setup (" + "; ".join(diffs)
                            + "): rebuild it here with `deploycc build --target trt --force`")


def current_environment(device: str = "cuda") -> dict[str, str]:
    """TensorRT version, GPU name and compute capability of this machine's `device`."""
    index = torch.device(device).index or 0
    major, minor = torch.cuda.get_device_capability(index)
    return {"tensorrt": _trt().__version__, "gpu": torch.cuda.get_device_name(index),
            "compute_capability": f"{major}.{minor}"}


def profiles(settings: TargetSettings) -> list[tuple[Profile, Profile]]:
    """(batch, atoms) ranges, one per optimization profile: the settings' own, then extra.profiles."""
    found = [(settings.batch, settings.atoms)]
    for entry in settings.extra.get("profiles", []):
        try:
            found.append((Profile(*entry["batch"]), Profile(*entry["atoms"])))
        except (KeyError, TypeError) as exc:
            raise UserInputError(f"trt extra.profiles entry {entry!r}: needs batch and atoms = [min, opt, max] ({exc})") from None
    return found


def _network_flags(trt) -> int:
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _parse(trt, builder, logger, onnx_path: Path):
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(k)) for k in range(parser.num_errors)]
        raise TensorRTBuildError(f"TensorRT's ONNX parser refused {onnx_path.name}: " + " | ".join(errors)[:500])
    return network, parser


def _config(trt, builder, settings: TargetSettings, cache_path: Path):
    config = builder.create_builder_config()
    workspace = int(float(settings.extra.get("workspace_gib", 8)) * (1 << 30))
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)
    for batch, atoms in profiles(settings):
        profile = builder.create_optimization_profile()
        profile.set_shape("numbers", (batch.min, atoms.min), (batch.opt, atoms.opt), (batch.max, atoms.max))
        profile.set_shape("positions", (batch.min, atoms.min, 3), (batch.opt, atoms.opt, 3),
                          (batch.max, atoms.max, 3))
        config.add_optimization_profile(profile)
    return config


def build_engine(onnx_path: Path, settings: TargetSettings, engine_path: Path) -> None:
    """Parse, build and serialize; the timing cache is read from and written back beside the engine."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path)
    cache_path = engine_path.with_name(TIMING_CACHE)
    config = _config(trt, builder, settings, cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError("TensorRT failed to build the engine (see its log above)")
    engine_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))


_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32, "INT64": torch.int64,
                 "BOOL": torch.bool}


class TrtRunner(Runner):
    """Runs an engine on torch CUDA tensors, one execution context per optimization profile."""

    def __init__(self, engine_path: Path, device: str) -> None:
        trt = _trt()
        self.device = device
        self._check_compatible(engine_path)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with torch.cuda.device(torch.device(device)):
            self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise ArtifactError(f"{engine_path} could not be deserialized by TensorRT {trt.__version__}: rebuild it")
        self.ranges = [self._profile_range(k) for k in range(self.engine.num_optimization_profiles)]
        self.contexts: dict[int, Any] = {}
        self.dtypes = {name: _TORCH_DTYPES[self.engine.get_tensor_dtype(name).name] for name in self._names()}

    def _check_compatible(self, engine_path: Path) -> None:
        info = engine_path.with_name(ENGINE_INFO)
        if not info.is_file():
            raise ArtifactError(f"{info} is missing: cannot tell what the engine was built for; rebuild it")
        check_engine_compatibility(json.loads(info.read_text()), current_environment(self.device))

    def _names(self) -> list[str]:
        return [self.engine.get_tensor_name(k) for k in range(self.engine.num_io_tensors)]

    def _profile_range(self, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
        low, _opt, high = self.engine.get_tensor_profile_shape("numbers", index)
        return (low[0], high[0]), (low[1], high[1])

    def _pick(self, n: int) -> int:
        """The profile with the tightest atom range that holds n atoms."""
        fitting = [k for k, (_b, (lo, hi)) in enumerate(self.ranges) if hi >= n]
        if not fitting:
            most = max(hi for _b, (_lo, hi) in self.ranges)
            raise UserInputError(f"{n} atoms per structure exceeds this engine's profile maximum of {most}; "
                                 "rebuild with a larger [atoms] max")
        return min(fitting, key=lambda k: (self.ranges[k][1][1], -self.ranges[k][0][1]))

    def _context(self, index: int):
        if index not in self.contexts:
            context = self.engine.create_execution_context()
            context.set_optimization_profile_async(index, torch.cuda.current_stream().cuda_stream)
            self.contexts[index] = context
        return self.contexts[index]

    def run(self, numbers: torch.Tensor, positions: torch.Tensor, *periodic: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
        numbers, positions = numbers.to(self.device), positions.to(self.device, torch.float32)
        b, n = numbers.shape
        index = self._pick(n)
        (b_min, b_max), (a_min, _a_max) = self.ranges[index]
        width = max(n, a_min)
        numbers = torch.nn.functional.pad(numbers, (0, width - n))
        positions = torch.nn.functional.pad(positions, (0, 0, 0, width - n))
        outputs = [self._run(index, numbers[k : k + b_max], positions[k : k + b_max], b_min)
                   for k in range(0, b, b_max)]
        energy = torch.cat([e for e, _f in outputs])
        forces = torch.cat([f for _e, f in outputs])[:, :n]
        return energy, forces

    def _run(self, index: int, numbers: torch.Tensor, positions: torch.Tensor, b_min: int):
        with torch.cuda.device(torch.device(self.device)):
            b = numbers.shape[0]
            if b < b_min:  # pad with empty structures (zero energy and forces)
                numbers = torch.nn.functional.pad(numbers, (0, 0, 0, b_min - b))
                positions = torch.nn.functional.pad(positions, (0, 0, 0, 0, 0, b_min - b))
            energy, forces = self._execute(self._context(index), numbers, positions)
            return energy[:b].float(), forces[:b].float()

    def _execute(self, context, numbers: torch.Tensor, positions: torch.Tensor):
        b, n = numbers.shape
        inputs = {"numbers": numbers.to(self.dtypes["numbers"]).contiguous(),
                  "positions": positions.to(self.dtypes["positions"]).contiguous()}
        outputs = {"energy": torch.empty(b, dtype=self.dtypes["energy"], device=self.device),
                   "forces": torch.empty(b, n, 3, dtype=self.dtypes["forces"], device=self.device)}
        for name, tensor in inputs.items():
            context.set_input_shape(name, tuple(tensor.shape))
        for name, tensor in {**inputs, **outputs}.items():
            context.set_tensor_address(name, tensor.data_ptr())
        if not context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see its log)")
        return outputs["energy"], outputs["forces"]


class TrtTarget(Target):
    name = "trt"
    artifact_file = "model.engine"
    description = "TensorRT engine from the fp16-mixed ONNX graph (strongly typed), energy + forces"
    devices = ("cuda",)

    def availability(self, settings: TargetSettings) -> str | None:
        try:
            _trt()
        except MissingDependencyError:
            return NOT_INSTALLED
        except Exception as exc:  # noqa: BLE001 - a broken install (missing libnvinfer, ...) is still a reason
            return f"TensorRT cannot be imported ({type(exc).__name__}: {exc})"
        if not torch.cuda.is_available():
            return "needs a CUDA GPU: none is visible to PyTorch"
        return super().availability(settings)

    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        onnx_path = out_dir / ONNX_FILE
        onnx_notes = export_mixed_onnx(model, replace(settings, device="cpu"), onnx_path)
        preflight(onnx_path)
        engine_path = out_dir / self.artifact_file
        build_engine(onnx_path, settings, engine_path)
        info = current_environment(settings.device)
        (out_dir / ENGINE_INFO).write_text(json.dumps(info, indent=2) + "\n")
        model.to(settings.device)
        notes = {**info, "onnx": onnx_notes, "strongly_typed": True, "timing_cache": TIMING_CACHE,
                 "profiles": [{"batch": [b.min, b.opt, b.max], "atoms": [a.min, a.opt, a.max]}
                              for b, a in profiles(settings)]}
        return Exported(engine_path, notes)

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        return TrtRunner(Path(artifact), settings.device)


register(TrtTarget())
