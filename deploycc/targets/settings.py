"""Per-target settings: device, precision, profiles of the dynamic axes, parity tolerances, memory model.

Every target declares its defaults beside its code (`Target.defaults`), so an installed package builds
exactly as the checkout does.  A TOML file `$DEPLOYCC_HOME/targets/<name>.toml` may override any of them
(tables `[atoms]`, `[neighbours]`, `[tolerances]`, `[memory]`, `[extra]` are merged key by key).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import UserInputError


@dataclass(frozen=True)
class Profile:
    """A min/opt/max range of one dynamic axis (atoms per call, or neighbour slots per atom)."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        values = (self.min, self.opt, self.max)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values) or not 1 <= self.min <= self.opt <= self.max:
            raise UserInputError(f"a profile needs integers 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}")


def _positive_numbers(instance) -> None:
    """Every field of a settings table a finite positive number (a one-line UserInputError otherwise)."""
    for f in fields(instance):
        value = getattr(instance, f.name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
        if not ok:
            raise UserInputError(f"{type(instance).__name__.lower()}.{f.name} must be a non-negative number, "
                                 f"got {value!r}")


@dataclass(frozen=True)
class Tolerances:
    """Parity tolerances: energy per atom (eV/atom); forces abs (eV/Å) or relative RMSE (fraction);
    virial per atom (eV/atom, periodic structures)."""

    energy_per_atom_abs: float = 5e-5
    forces_abs: float = 5e-4
    forces_rel: float = 1e-4
    virial_per_atom_abs: float = 1e-4

    def __post_init__(self) -> None:
        _positive_numbers(self)


@dataclass(frozen=True)
class MemoryModel:
    """Peak memory of one call, estimated before it runs: base + per_atom * A + per_slot * A * M bytes.
    Each target's coefficients are the peak RSS that `deploycc scale` measured on water boxes of 3,000 and
    10,000 atoms (2 CPU threads), rounded up."""

    base: float = 64e6
    per_atom: float = 8e3
    per_slot: float = 1.5e3

    def __post_init__(self) -> None:
        _positive_numbers(self)

    def estimate(self, atoms: int, slots: int) -> float:
        return self.base + self.per_atom * atoms + self.per_slot * atoms * slots


@dataclass(frozen=True)
class TargetSettings:
    """Everything that decides how one target builds, what its artifact must satisfy and what it holds."""

    target: str
    device: str = "cpu"
    precision: str = "fp32"
    atoms: Profile = field(default_factory=lambda: Profile(1, 1024, 1 << 20))  # atoms per call
    neighbours: Profile = field(default_factory=lambda: Profile(1, 48, 512))  # slots per atom
    tolerances: Tolerances = field(default_factory=Tolerances)
    memory: MemoryModel = field(default_factory=MemoryModel)
    opset: int = 20  # the TensorRT ONNX parser's limit
    simplify: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_device(self, device: str | None) -> "TargetSettings":
        return self if device is None else replace(self, device=checked_device(device))

    def merged(self, raw: dict[str, Any], source: str) -> "TargetSettings":
        """These settings with the keys of `raw` (a TOML document or a manifest's settings) replaced."""
        known = {f.name for f in fields(TargetSettings)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise UserInputError(f"{source}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {}
        try:
            for name, kind in (("atoms", Profile), ("neighbours", Profile), ("tolerances", Tolerances),
                               ("memory", MemoryModel)):
                if name in raw:
                    values[name] = kind(**{**asdict(getattr(self, name)), **_table(raw[name], name, source)})
            for name in ("target", "device", "precision"):
                if name in raw:
                    if not isinstance(raw[name], str):
                        raise TypeError(f"'{name}' must be a string, got {type(raw[name]).__name__}")
                    values[name] = raw[name]
            if "device" in values:
                values["device"] = checked_device(values["device"])
            if values.get("precision", self.precision) not in PRECISIONS:
                raise ValueError(f"precision {values['precision']!r} is not one of {', '.join(PRECISIONS)}")
            if "opset" in raw:
                values["opset"] = int(raw["opset"])
            if "simplify" in raw:
                values["simplify"] = bool(raw["simplify"])
            if "extra" in raw:
                values["extra"] = {**self.extra, **_table(raw["extra"], "extra", source)}
        except (TypeError, ValueError, UserInputError) as exc:
            raise UserInputError(f"{source}: bad setting ({exc})") from None
        merged = replace(self, **values)
        if merged.opset > 20:
            raise UserInputError(f"{source}: opset {merged.opset} is above 20, the TensorRT ONNX parser's limit")
        return merged


PRECISIONS = ("fp32", "fp16-mixed")
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def checked_device(device: str) -> str:
    """`device` when it is cpu, cuda or cuda:N (the devices any target runs on), else a one-line refusal."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise UserInputError(f"device {device!r} is not one deploycc runs on: give cpu, cuda or cuda:N")
    return device


def _table(value: Any, name: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserInputError(f"{source}: '{name}' must be a table, got {type(value).__name__}")
    return value


def override_file(name: str) -> Path | None:
    """`$DEPLOYCC_HOME/targets/<name>.toml` when DEPLOYCC_HOME is set and the file exists."""
    home = os.environ.get("DEPLOYCC_HOME")
    path = Path(home) / "targets" / f"{name}.toml" if home else None
    return path if path is not None and path.is_file() else None


def with_overrides(defaults: TargetSettings) -> TargetSettings:
    """A target's defaults with its override file applied, if there is one."""
    path = override_file(defaults.target)
    if path is None:
        return defaults
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: not valid TOML ({exc})") from None
    return defaults.merged(raw, str(path))
