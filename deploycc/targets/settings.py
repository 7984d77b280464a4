"""Per-target settings, read from `targets/<name>.toml`: device, precision, profiles, tolerances."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ..paths import targets_dir


@dataclass(frozen=True)
class Profile:
    """A min/opt/max range for one dynamic axis (batch size or atom count)."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not (1 <= self.min <= self.opt <= self.max):
            raise UserInputError(f"profile needs 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}")


@dataclass(frozen=True)
class Tolerances:
    """Parity tolerances: energy per atom (abs, eV/atom); forces abs (eV/A) or relative RMSE (fraction);
    virial per atom abs (eV/atom, periodic structures of periodic artifacts only)."""

    energy_per_atom_abs: float = 1e-5
    forces_abs: float = 1e-4
    forces_rel: float = 1e-4
    virial_per_atom_abs: float = 1e-4


@dataclass(frozen=True)
class TargetSettings:
    """Everything that decides how one target builds and what its artifact must satisfy."""

    target: str
    device: str = "cpu"
    precision: str = "fp32"
    batch: Profile = field(default_factory=lambda: Profile(1, 32, 256))
    atoms: Profile = field(default_factory=lambda: Profile(1, 32, 128))
    tolerances: Tolerances = field(default_factory=Tolerances)
    opset: int = 20
    simplify: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_device(self, device: str | None) -> "TargetSettings":
        return self if device is None else replace(self, device=device)


def _parse(name: str, raw: dict[str, Any], source: str) -> TargetSettings:
    try:
        return TargetSettings(
            target=raw.get("target", name),
            device=raw.get("device", "cpu"),
            precision=raw.get("precision", "fp32"),
            batch=Profile(**raw.get("batch", {"min": 1, "opt": 32, "max": 256})),
            atoms=Profile(**raw.get("atoms", {"min": 1, "opt": 32, "max": 128})),
            tolerances=Tolerances(**raw.get("tolerances", {})),
            opset=int(raw.get("opset", 20)),
            simplify=bool(raw.get("simplify", True)),
            extra=dict(raw.get("extra", {})),
        )
    except TypeError as exc:
        raise UserInputError(f"{source}: bad setting ({exc})") from None


def load_settings(name: str, directory: Path | None = None) -> TargetSettings:
    """Settings of target `name` from `<directory>/<name>.toml` (defaults when the file does not exist)."""
    path = (directory or targets_dir()) / f"{name}.toml"
    if not path.is_file():
        return TargetSettings(target=name)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserInputError(f"{path}: not valid TOML ({exc})") from None
    settings = _parse(name, raw, str(path))
    if settings.opset > 20:
        raise UserInputError(f"{path}: opset {settings.opset} is above 20, the TensorRT ONNX parser's limit")
    return settings
