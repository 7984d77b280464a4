"""TensorRT: a serialized engine built from the fp16-mixed ONNX graph (float16 neighbour contractions inside
a float32 model; see deploycc/model/mixed.py).

Build: onnx-fp16 export -> pre-flight (trt_preflight, pure Python) -> trt.OnnxParser into a *strongly typed*
network -> builder config (workspace limit, TF32 cleared, the persistent timing cache, one optimization
profile per (atoms, slots) range) -> builder.build_serialized_network, all on the CUDA device the settings
name.  Strongly typed on every TensorRT version: the precision is the ONNX graph's own (the casts of the
mixed model), so no FP16 flag is set; that is the only way on TensorRT >= 11 and exists on 10.

TF32 is cleared (`CLEARED_FLAGS`): it is on by default and would round the float32 products of the geometry
and the per-atom filters to 10-bit mantissas.

Timing cache: one file per TensorRT version and GPU under the user's cache folder (`timing_cache_file`),
read before and written back after every build, so tactics are timed once per machine; the manifest notes
whether an existing cache was loaded.  A cache TensorRT refuses is an error, not silently ignored.

Files: model.engine (the artifact), engine.json with the TensorRT version, GPU name and compute capability
of the build: an engine only runs on the TensorRT version and GPU model it was built for, so the runner
refuses any other.

Runner: its own CUDA stream, ordered after the caller's current stream by an event and before it again when
done; input buffers 256-byte aligned (`aligned`), every boolean TensorRT returns checked.  Requests below a
profile's minimum are padded (padding atoms and slots as in `cuda_graph.pad_inputs`).  Profiles: the
settings' atoms and neighbours ranges; more with `[[extra.profiles]]` tables holding `atoms = [min, opt,
max]` and `neighbours = [min, opt, max]`.  `tensorrt` is imported inside functions only.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..errors import ArtifactError, DeployccError, MissingDependencyError, UserInputError
from ..model import StudentModel
from .base import INPUT_NAMES, Exported, GraphInputs, Runner, Target, register
from .cuda_graph import pad_inputs
from .onnx_fp16 import FP16_TOLERANCES, export_mixed_onnx
from .settings import MemoryModel, Profile, TargetSettings
from .trt_preflight import preflight

ENGINE_INFO = "engine.json"
ONNX_FILE = "model.onnx"
NOT_INSTALLED = "TensorRT is not installed: pip install 'deploycc[trt]' (NVIDIA's index) on a machine with an NVIDIA GPU"
COMPAT_KEYS = (("tensorrt", "TensorRT"), ("gpu", "GPU"), ("compute_capability", "compute capability"))
CLEARED_FLAGS = ("TF32",)
ALIGNMENT = 256  # bytes: what IExecutionContext::setTensorAddress requires of every I/O address
ALLOCATION_STRATEGIES = ("STATIC", "ON_PROFILE_CHANGE")


class TensorRTBuildError(DeployccError):
    """TensorRT could not parse the ONNX graph, accept a setting or build an engine from it."""


class TensorRTRuntimeError(DeployccError):
    """TensorRT refused a shape, an address or an execution at run time."""


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


def cache_root(environ: dict[str, str] | None = None) -> Path:
    """$DEPLOYCC_CACHE, else $XDG_CACHE_HOME/deploycc, else ~/.cache/deploycc."""
    env = os.environ if environ is None else environ
    if env.get("DEPLOYCC_CACHE"):
        return Path(env["DEPLOYCC_CACHE"])
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "deploycc"


def timing_cache_file(environment: dict[str, str], root: Path | None = None) -> Path:
    """The persistent timing cache of one TensorRT version on one GPU model (compute capability)."""
    key = "-".join(re.sub(r"[^A-Za-z0-9.]+", "_", str(environment[k])) for k, _label in COMPAT_KEYS)
    return (root or cache_root()) / "trt" / f"timing-{key}.cache"


def read_timing_cache(path: Path) -> bytes:
    """The cache's bytes, or b"" when there is none yet."""
    return path.read_bytes() if path.is_file() else b""


def write_timing_cache(path: Path, data: bytes) -> None:
    """Replace the cache atomically (a concurrent build reads either the old or the new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def profiles(settings: TargetSettings) -> list[tuple[Profile, Profile]]:
    """(atoms, slots) ranges, one per optimization profile: the settings' own, then extra.profiles."""
    found = [(settings.atoms, settings.neighbours)]
    extra = settings.extra.get("profiles", [])
    if not isinstance(extra, (list, tuple)):
        raise UserInputError(f"trt extra.profiles must be a list of tables ([[extra.profiles]] in TOML), "
                             f"got {type(extra).__name__} {extra!r}")
    for entry in extra:
        try:
            unknown = sorted(set(entry) - {"atoms", "neighbours"}) if isinstance(entry, dict) else []
            if unknown:
                raise KeyError(f"unknown key(s) {', '.join(map(str, unknown))}")
            found.append((Profile(*entry["atoms"]), Profile(*entry["neighbours"])))
        except (KeyError, TypeError, UserInputError) as exc:
            raise UserInputError(f"trt extra.profiles entry {entry!r}: needs atoms and neighbours = "
                                 f"[min, opt, max] ({exc})") from None
    return found


def input_shapes(atoms: int, slots: int) -> dict[str, tuple[int, ...]]:
    return {"numbers": (atoms,), "vectors": (atoms, slots, 3), "neighbours": (atoms, slots),
            "reverse": (atoms, slots)}


def aligned(tensor: torch.Tensor, alignment: int = ALIGNMENT) -> torch.Tensor:
    """`tensor` itself when contiguous and `alignment`-byte aligned, else an aligned contiguous copy."""
    if tensor.is_contiguous() and tensor.data_ptr() % alignment == 0:
        return tensor
    spare = -(-alignment // tensor.element_size())
    buffer = torch.empty(tensor.numel() + spare, dtype=tensor.dtype, device=tensor.device)
    offset = (-buffer.data_ptr() % alignment) // tensor.element_size()
    out = buffer[offset : offset + tensor.numel()].view(tensor.shape)
    out.copy_(tensor)
    return out


def _check(ok: bool, what: str, error: type[DeployccError] = TensorRTRuntimeError) -> None:
    if not ok:
        raise error(f"TensorRT refused {what} (see its log above)")


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


def _config(trt, builder, settings: TargetSettings, cache: bytes):
    config = builder.create_builder_config()
    workspace = int(float(settings.extra.get("workspace_gib", 8)) * (1 << 30))
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    for name in CLEARED_FLAGS:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    timing = config.create_timing_cache(cache)
    _check(config.set_timing_cache(timing, False), "the timing cache", TensorRTBuildError)
    for atoms, slots in profiles(settings):
        profile = builder.create_optimization_profile()
        for name, low, opt, high in zip(INPUT_NAMES, input_shapes(atoms.min, slots.min).values(),
                                        input_shapes(atoms.opt, slots.opt).values(),
                                        input_shapes(atoms.max, slots.max).values()):
            profile.set_shape(name, low, opt, high)
        _check(config.add_optimization_profile(profile) >= 0, f"profile atoms {atoms} slots {slots}",
               TensorRTBuildError)
    return config


def build_engine(onnx_path: Path, settings: TargetSettings, engine_path: Path) -> dict[str, Any]:
    """Parse, build and serialize on settings.device; returns the timing-cache notes for the manifest."""
    trt = _trt()
    environment = current_environment(settings.device)
    cache_path = timing_cache_file(environment)
    cache = read_timing_cache(cache_path)
    with torch.cuda.device(torch.device(settings.device)):
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network, _parser = _parse(trt, builder, logger, onnx_path)
        config = _config(trt, builder, settings, cache)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise TensorRTBuildError("TensorRT failed to build the engine (see its log above)")
        engine_path.write_bytes(bytes(serialized))
        updated = bytes(config.get_timing_cache().serialize())
    write_timing_cache(cache_path, updated)
    return {"path": str(cache_path), "loaded_bytes": len(cache), "reused": len(cache) > 0,
            "saved_bytes": len(updated)}


_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32, "INT64": torch.int64,
                 "BOOL": torch.bool}


class TrtRunner(Runner):
    """Runs an engine on torch CUDA tensors on its own stream, one execution context per profile."""

    def __init__(self, engine_path: Path, settings: TargetSettings) -> None:
        trt = _trt()
        self.device = settings.device
        self._check_compatible(engine_path)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        strategy = str(settings.extra.get("allocation_strategy", "STATIC")).upper()
        if strategy not in ALLOCATION_STRATEGIES:
            raise UserInputError(f"trt extra.allocation_strategy must be one of {', '.join(ALLOCATION_STRATEGIES)}")
        self.strategy = getattr(trt.ExecutionContextAllocationStrategy, strategy)
        with torch.cuda.device(torch.device(self.device)):
            self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
            self.stream = torch.cuda.Stream()
        if self.engine is None:
            raise ArtifactError(f"{engine_path} could not be deserialized by TensorRT {trt.__version__}: rebuild it")
        self.ranges = [self._profile_range(k) for k in range(self.engine.num_optimization_profiles)]
        self.contexts: dict[int, Any] = {}
        names = [self.engine.get_tensor_name(k) for k in range(self.engine.num_io_tensors)]
        self.dtypes = {name: _TORCH_DTYPES[self.engine.get_tensor_dtype(name).name] for name in names}

    def _check_compatible(self, engine_path: Path) -> None:
        info = engine_path.with_name(ENGINE_INFO)
        if not info.is_file():
            raise ArtifactError(f"{info} is missing: cannot tell what the engine was built for; rebuild it")
        check_engine_compatibility(json.loads(info.read_text()), current_environment(self.device))

    def _profile_range(self, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
        low, _opt, high = self.engine.get_tensor_profile_shape("neighbours", index)
        return (low[0], high[0]), (low[1], high[1])

    def _pick(self, a: int, m: int) -> int:
        """The profile with the tightest ranges that hold a atoms with m slots."""
        fitting = [k for k, ((_a0, a1), (_m0, m1)) in enumerate(self.ranges) if a1 >= a and m1 >= m]
        if not fitting:
            raise UserInputError(f"{a} atoms with {m} neighbour slots exceed every profile of this engine "
                                 f"({self.ranges}); split the request or rebuild with larger profiles")
        return min(fitting, key=lambda k: (self.ranges[k][0][1] * self.ranges[k][1][1], k))

    def _context(self, index: int):
        if index not in self.contexts:
            context = self.engine.create_execution_context(self.strategy)
            _check(context.set_optimization_profile_async(index, self.stream.cuda_stream), f"profile {index}")
            self.contexts[index] = context
        return self.contexts[index]

    def infer_impl(self, inputs: GraphInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, m = inputs.atoms, inputs.slots
        index = self._pick(a, m)
        (a_min, _a_max), (m_min, _m_max) = self.ranges[index]
        with torch.cuda.device(torch.device(self.device)):
            padded = pad_inputs(inputs.to(self.device), max(a, a_min), max(m, m_min))
            energies, forces, virials = self._execute(self._context(index), padded)
        return energies[:a].float(), forces[:a].float(), virials[:a].float()

    def _execute(self, context, inputs: GraphInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        caller = torch.cuda.current_stream()
        a = inputs.atoms
        feeds = {name: aligned(tensor.to(self.dtypes[name])) for name, tensor in zip(INPUT_NAMES, inputs.tensors())}
        outputs = {"energies": torch.empty(a, dtype=self.dtypes["energies"], device=self.device),
                   "forces": torch.empty(a, 3, dtype=self.dtypes["forces"], device=self.device),
                   "virials": torch.empty(a, 3, 3, dtype=self.dtypes["virials"], device=self.device)}
        for name, tensor in feeds.items():
            _check(context.set_input_shape(name, tuple(tensor.shape)), f"input shape {name} {tuple(tensor.shape)}")
        for name, tensor in {**feeds, **outputs}.items():
            _check(tensor.data_ptr() % ALIGNMENT == 0, f"a misaligned address for {name}")
            _check(context.set_tensor_address(name, tensor.data_ptr()), f"the address of {name}")
        self.stream.wait_stream(caller)  # inputs were written on the caller's stream
        for tensor in (*feeds.values(), *outputs.values()):
            tensor.record_stream(self.stream)  # the allocator must not reuse them before the engine is done
        _check(context.execute_async_v3(self.stream.cuda_stream), "execute_async_v3")
        caller.wait_stream(self.stream)
        return outputs["energies"], outputs["forces"], outputs["virials"]


@register
class TrtTarget(Target):
    name = "trt"
    artifact_file = "model.engine"
    description = "TensorRT engine from the fp16-mixed ONNX graph (strongly typed): energies, forces, virials"
    devices = ("cuda",)
    defaults = TargetSettings(target="trt", device="cuda", precision="fp16-mixed", tolerances=FP16_TOLERANCES,
                              atoms=Profile(1, 1024, 65536), neighbours=Profile(1, 48, 128),
                              memory=MemoryModel(base=0.3e9, per_slot=1.6e3), extra={"workspace_gib": 8})  # not measured

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
        cache_notes = build_engine(onnx_path, settings, engine_path)
        info = current_environment(settings.device)
        (out_dir / ENGINE_INFO).write_text(json.dumps(info, indent=2) + "\n")
        notes = {**info, "onnx": onnx_notes, "strongly_typed": True, "cleared_flags": list(CLEARED_FLAGS),
                 "timing_cache": cache_notes,
                 "profiles": [{"atoms": [a.min, a.opt, a.max], "neighbours": [m.min, m.opt, m.max]}
                              for a, m in profiles(settings)]}
        return Exported(engine_path, notes)

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        return TrtRunner(Path(artifact), settings)
