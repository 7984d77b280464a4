"""Student architecture settings and the named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import UserInputError


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the PaiNN-style student."""

    hidden_dim: int = 64
    num_interactions: int = 2
    num_rbf: int = 12
    cutoff: float = 5.0
    max_z: int = 100
    # Trained on periodic data (recorded; parity then defaults to the periodic calibration set).  Every model
    # takes molecules and periodic cells alike: periodicity is a property of the input.
    periodic: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        """Build from a dict, ignoring keys that are not architecture settings (e.g. training options)."""
        kinds = {"hidden_dim": int, "num_interactions": int, "num_rbf": int, "cutoff": float, "max_z": int,
                 "periodic": bool}
        return cls(**{k: kinds[f.name](values[k]) for f in fields(cls) if (k := f.name) in values})


PRESET_CONFIGS: dict[str, ModelConfig] = {
    "original": ModelConfig(hidden_dim=128, num_interactions=3, num_rbf=20),
    "tiny": ModelConfig(hidden_dim=64, num_interactions=2, num_rbf=12),
    "ultra-tiny": ModelConfig(hidden_dim=32, num_interactions=2, num_rbf=10),
    "metals-tiny": ModelConfig(hidden_dim=64, num_interactions=2, num_rbf=12, periodic=True),
    "tiny-ani1x": ModelConfig(hidden_dim=64, num_interactions=2, num_rbf=12),  # tiny, distilled from ANI-1x
    "original-ani1x": ModelConfig(hidden_dim=128, num_interactions=3, num_rbf=20),  # original, from ANI-1x
    "metals-7net": ModelConfig(hidden_dim=64, num_interactions=2, num_rbf=12, periodic=True),  # metals-tiny, SevenNet-0
}


def preset_config(name: str) -> ModelConfig:
    """The architecture of a named preset; a clear error lists the valid names."""
    try:
        return PRESET_CONFIGS[name]
    except KeyError:
        valid = ", ".join(PRESET_CONFIGS)
        raise UserInputError(f"unknown model '{name}': choose one of {valid}, or give a checkpoint path") from None
