"""The typed manifest of an artifact folder (`manifest.json`): what was built, from what, how, and its parity.

`Manifest.from_dict` is the one reader: every field is checked against its declared type and a bad one is a
one-line ArtifactError naming the file and the field.  Version 2 is the neighbour-slot layout; version 1
artifacts (dense padded batches, before deploycc 0.2) cannot run here and are refused with a rebuild hint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArtifactError
from .layout import MANIFEST, REFERENCE, recover_if_interrupted

MANIFEST_VERSION = 2
LAYOUT = "neighbour-slots"


@dataclass(frozen=True)
class ArtifactFile:
    file: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class CheckpointRef:
    path: str
    sha256: str
    copy: str = REFERENCE


@dataclass
class Manifest:
    """Everything an artifact says about itself."""

    model: str
    target: str
    device: str
    checkpoint: CheckpointRef
    artifact: ArtifactFile
    settings: dict[str, Any]
    model_config: dict[str, Any]
    parity: dict[str, Any]
    cache_key: str = ""
    elements: list[int] | None = None  # training elements (None = unknown), for unseen-element checks
    checkpoint_metadata: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    library_versions: dict[str, str] = field(default_factory=dict)
    built_at: str = ""
    build_seconds: float = 0.0
    layout: str = LAYOUT
    format_version: int = MANIFEST_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def parity_passed(self) -> bool:
        return bool(self.parity.get("passed"))

    @classmethod
    def from_dict(cls, raw: Any, source: str) -> "Manifest":
        """A checked manifest; ArtifactError (one line, naming `source` and the field) for anything else."""
        if not isinstance(raw, dict):
            raise ArtifactError(f"{source}: the manifest is a JSON {type(raw).__name__}, not an object")
        version = _field(raw, "format_version", int, source)
        if version > MANIFEST_VERSION:
            raise ArtifactError(f"{source} has format_version {version}; this deploycc reads up to "
                                f"{MANIFEST_VERSION}: upgrade deploycc")
        if version < MANIFEST_VERSION or raw.get("layout") != LAYOUT:
            raise ArtifactError(f"{source} was built by an older deploycc (dense layout, format_version "
                                f"{version}): rebuild it with `deploycc build --force`")
        artifact = _field(raw, "artifact", dict, source)
        checkpoint = _field(raw, "checkpoint", dict, source)
        elements = raw.get("elements")
        if elements is not None and not (isinstance(elements, list)
                                         and all(isinstance(z, int) and not isinstance(z, bool) for z in elements)):
            raise ArtifactError(f"{source}: 'elements' must be a list of atomic numbers or null")
        return cls(
            model=_field(raw, "model", str, source), target=_field(raw, "target", str, source),
            device=_field(raw, "device", str, source),
            checkpoint=CheckpointRef(_field(checkpoint, "path", str, source, "checkpoint."),
                                     _field(checkpoint, "sha256", str, source, "checkpoint."),
                                     str(checkpoint.get("copy", REFERENCE))),
            artifact=ArtifactFile(_field(artifact, "file", str, source, "artifact."),
                                  _field(artifact, "sha256", str, source, "artifact."),
                                  _field(artifact, "bytes", int, source, "artifact.")),
            settings=_field(raw, "settings", dict, source), model_config=_field(raw, "model_config", dict, source),
            parity=_field(raw, "parity", dict, source), cache_key=str(raw.get("cache_key", "")),
            elements=elements, checkpoint_metadata=dict(raw.get("checkpoint_metadata") or {}),
            notes=dict(raw.get("notes") or {}), library_versions=dict(raw.get("library_versions") or {}),
            built_at=str(raw.get("built_at", "")), build_seconds=float(raw.get("build_seconds", 0.0)),
            layout=LAYOUT, format_version=version)


def _field(raw: dict[str, Any], name: str, kind: type, source: str, prefix: str = "") -> Any:
    if name not in raw:
        raise ArtifactError(f"{source} lacks '{prefix}{name}': rebuild the artifact")
    value = raw[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ArtifactError(f"{source}: '{prefix}{name}' must be a {kind.__name__}, got {type(value).__name__} "
                            f"{json.dumps(value, default=str)[:40]}")
    return value


def read_manifest(folder: Path) -> Manifest:
    """The manifest of an artifact folder; one-line errors for missing, unreadable or foreign manifests."""
    folder = Path(folder)
    recover_if_interrupted(folder)
    if not folder.is_dir():
        raise ArtifactError(f"artifact folder {folder} does not exist; build it with `deploycc build`")
    path = folder / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{folder} has no {MANIFEST}: not a deploycc artifact (rebuild it with `deploycc build`)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc})") from None
    return Manifest.from_dict(raw, str(path))
