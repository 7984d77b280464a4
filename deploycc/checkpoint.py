"""Checkpoints: one versioned, weights-only format; the predecessor's layout loads too.

`load_checkpoint` is the one reader, checked against a declared schema: a dict holding `state_dict` (tensors,
all finite), an integer `format_version`, `model_config` (typed, each value in its domain: CONFIG_DOMAIN) and
a `metadata` dict whose `elements` are atomic numbers.  Anything else is a one-line CheckpointError naming
the file and the field; nothing in the file is executed (weights-only unpickling).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .model import PRESET_CONFIGS, ModelConfig, StudentModel
from .paths import presets_dir

FORMAT_VERSION = 1
_NORMALISATION_KEYS = ("element_ref", "scale", "shift")


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model, where it came from and what it knows about its training."""

    model: StudentModel
    path: Path | None
    sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str = "custom"

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def elements(self) -> list[int] | None:
        """Atomic numbers the training set held: `metadata["elements"]` (saved by `deploycc train`), else the
        nonzero per-element reference energies (least squares leaves absent elements at 0); None = unknown."""
        if self.metadata.get("elements"):
            return sorted(int(z) for z in self.metadata["elements"])
        present = torch.nonzero(self.model.element_ref[1:]).flatten() + 1
        return [int(z) for z in present] or None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def preset_path(name: str) -> Path:
    return presets_dir() / f"{name}.pt"


def resolve(source: str | os.PathLike) -> tuple[Path, str]:
    """A preset name or checkpoint path -> (path, display name)."""
    text = str(source)
    if text in PRESET_CONFIGS:
        path = preset_path(text)
        if not path.is_file():
            raise CheckpointError(f"preset '{text}' has no shipped checkpoint at {path}; train it with `deploycc train`")
        return path, text
    path = Path(text)
    if path.is_file():
        return path, path.stem
    valid = ", ".join(PRESET_CONFIGS)
    raise CheckpointError(f"no such model or checkpoint: '{text}' (presets: {valid}, or a path to a .pt file)")


def _read(path: Path) -> dict[str, Any]:
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f"it references {found.group(1)}" if found else "it holds objects other than tensors"
        raise CheckpointError(f"checkpoint {path} was refused by weights-only loading: {what}; "
                              "only plain tensors and containers are accepted (nothing in it was executed)") from None
    except Exception as exc:  # torch.load raises many types on foreign or truncated files
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
        reason = text.splitlines()[0][:160] if text else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or not a PyTorch file ({reason})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}, not a dict of weights")
    return payload


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("model.") for k in state):
        return {k[len("model.") :]: v for k, v in state.items()}
    return dict(state)


def infer_config(state: dict[str, torch.Tensor], hints: dict[str, Any] | None = None) -> ModelConfig:
    """Recover the architecture from tensor shapes (for checkpoints whose config is missing or partial)."""
    try:
        embedding = state["embedding.weight"]
        filter_weight = state["messages.0.filter.weight"]
    except KeyError as exc:
        raise CheckpointError(f"cannot infer the architecture: weight {exc} is missing") from None
    interactions = len({k.split(".")[1] for k in state if k.startswith("messages.")})
    cutoff = float((hints or {}).get("cutoff", 5.0))
    return ModelConfig(
        hidden_dim=int(embedding.shape[1]),
        num_interactions=interactions,
        num_rbf=int(filter_weight.shape[1]),
        cutoff=cutoff,
        max_z=int(embedding.shape[0]) - 1,
    )


def _check_keys(model: StudentModel, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else ""))
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected[:4]) + (" ..." if len(unexpected) > 4 else ""))
    if wrong:
        problems.append("shape " + "; ".join(wrong[:3]))
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit its architecture: " + " | ".join(problems))


# (type, lowest, highest) of every architecture setting a checkpoint may carry.
CONFIG_DOMAIN: dict[str, tuple[type, float, float]] = {
    "hidden_dim": (int, 2, 4096), "num_interactions": (int, 1, 16), "num_rbf": (int, 1, 256),
    "cutoff": (float, 0.5, 20.0), "max_z": (int, 1, 118), "periodic": (bool, 0, 1)}


def check_config(values: Any, path: Path) -> dict[str, Any]:
    """The model_config of a checkpoint, each known key of the declared type and within its domain."""
    if not isinstance(values, dict):
        raise CheckpointError(f"checkpoint {path}: 'model_config' must be a dict, got {type(values).__name__}")
    for key, (kind, low, high) in CONFIG_DOMAIN.items():
        if key not in values:
            continue
        value = values[key]
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = isinstance(value, bool) if kind is bool else numeric and (kind is float or float(value).is_integer())
        if not ok or (kind is not bool and not low <= float(value) <= high):
            raise CheckpointError(f"checkpoint {path}: model_config.{key} = {value!r} is not a {kind.__name__} "
                                  f"in {low:g}..{high:g}")
    return values


def check_metadata(metadata: Any, path: Path) -> dict[str, Any]:
    if not isinstance(metadata, dict):
        raise CheckpointError(f"checkpoint {path}: 'metadata' must be a dict, got {type(metadata).__name__}")
    elements = metadata.get("elements")
    if elements is not None and not (isinstance(elements, (list, tuple)) and all(
            isinstance(z, int) and not isinstance(z, bool) and 1 <= z <= 118 for z in elements)):
        raise CheckpointError(f"checkpoint {path}: metadata.elements must be a list of atomic numbers 1..118, "
                              f"got {str(elements)[:60]}")
    return metadata


def _check_weights(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"checkpoint {path} holds no weights (its state_dict is a {type(state).__name__})")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"checkpoint {path}: weight '{key}' is a {type(value).__name__}, not a tensor")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"checkpoint {path}: weight '{key}' holds NaN or infinite values")
    return state


def load_checkpoint(source: str | os.PathLike) -> Checkpoint:
    """Load a preset name or checkpoint path (current or predecessor layout) into an eval-mode model."""
    path, name = resolve(source)
    payload = _read(path)
    if "state_dict" in payload:
        raw_version = payload.get("format_version", 0)
        if not isinstance(raw_version, int) or isinstance(raw_version, bool):
            raise CheckpointError(f"checkpoint {path}: format_version must be an integer, got {raw_version!r}")
        version = raw_version
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {path} has format_version {version}; this deploycc reads up to {FORMAT_VERSION}: upgrade deploycc"
            )
        state = _strip_prefix(_check_weights(payload["state_dict"], path))
        config_values = check_config(payload.get("model_config") or {}, path)
    elif "model_state_dict" in payload:  # the predecessor's layout
        state = _strip_prefix(_check_weights(payload["model_state_dict"], path))
        config_values = check_config(payload.get("config") or payload.get("model_config") or {}, path)
    else:
        raise CheckpointError(f"checkpoint {path} has neither 'state_dict' nor 'model_state_dict'")
    known = {"hidden_dim", "num_interactions", "num_rbf", "max_z"}
    if known.issubset(config_values):
        config = ModelConfig.from_dict(config_values)
    else:
        config = infer_config(state, config_values)
    normalisation = payload.get("normalisation", {})
    for key in _NORMALISATION_KEYS:  # older files keep normalisation beside the weights
        if key not in state and isinstance(normalisation, dict) and key in normalisation:
            state[key] = torch.as_tensor(payload["normalisation"][key], dtype=torch.float32)
    model = StudentModel(config)
    _check_keys(model, state, path)
    model.load_state_dict(state)
    model.eval()
    metadata = dict(check_metadata(payload.get("metadata", {}), path))
    return Checkpoint(model=model, path=path, sha256=file_sha256(path), metadata=metadata, name=name)


def save_checkpoint(model: StudentModel, path: Path, metadata: dict[str, Any]) -> str:
    """Write a checkpoint atomically (temporary file, then rename); returns its sha256."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "format_version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "state_dict": state,
        "normalisation": {k: state[k] for k in _NORMALISATION_KEYS},
        "metadata": metadata,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return file_sha256(path)
