"""The one way into a built artifact: path -> folder -> manifest -> hashes -> settings -> target -> runner."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..checkpoint import Checkpoint, file_sha256, load_checkpoint
from ..errors import ArtifactError, DeployccError, MissingDependencyError
from ..targets.base import Runner, Target, get_target, open_runner, registered
from ..targets.settings import TargetSettings
from .layout import MANIFEST, PARITY, REFERENCE, artifact_folder, recover_if_interrupted
from .manifest import Manifest, read_manifest

_RESERVED = (MANIFEST, PARITY, REFERENCE)


@dataclass
class OpenedArtifact:
    """A checked artifact with its runner."""

    folder: Path
    manifest: Manifest
    target: Target
    settings: TargetSettings
    runner: Runner

    @property
    def label(self) -> str:
        return f"{self.manifest.model}/{self.manifest.target}"


def artifact_file(folder: Path, manifest: Manifest) -> Path:
    """The artifact file, checked against its sha256; its name must stay inside the folder."""
    name = manifest.artifact.file
    if Path(name).name != name or name in ("", ".", "..") or name in _RESERVED:
        raise ArtifactError(f"{folder / MANIFEST}: artifact.file '{name}' is not a file of the artifact folder")
    path = Path(folder) / name
    if not path.is_file():
        raise ArtifactError(f"artifact file {path} is missing; rebuild with `deploycc build --force`")
    actual = file_sha256(path)
    if actual != manifest.artifact.sha256:
        raise ArtifactError(f"{path} does not match its manifest (sha256 {actual[:12]} != "
                            f"{manifest.artifact.sha256[:12]}): it was modified; rebuild with `deploycc build --force`")
    return path


def built_settings(target: Target, manifest: Manifest, folder: Path) -> TargetSettings:
    """The settings an artifact was built with, on top of this version's defaults; keys another deploycc
    version wrote and this one does not know are ignored."""
    known = {f.name for f in fields(TargetSettings)}
    raw = {k: v for k, v in manifest.settings.items() if k in known}
    base = target.settings()
    for table, kind in (("atoms", base.atoms), ("neighbours", base.neighbours), ("tolerances", base.tolerances),
                        ("memory", base.memory)):
        if isinstance(raw.get(table), dict):
            names = {f.name for f in fields(kind)}
            raw[table] = {k: v for k, v in raw[table].items() if k in names}
    return base.merged(raw, str(folder / MANIFEST))


def open_artifact(path: Path | str, device: str | None = None, extra: dict[str, Any] | None = None
                  ) -> OpenedArtifact:
    """A runner on a built artifact after checking its manifest and hashes; `device` overrides the manifest's,
    `extra` adds run-time settings (e.g. {"threads": 2} for ONNX Runtime's pool)."""
    folder = artifact_folder(path)
    recover_if_interrupted(folder)  # a build killed mid-publish: restore the previous artifact
    manifest = read_manifest(folder)
    file = artifact_file(folder, manifest)
    if manifest.target not in registered():
        raise ArtifactError(f"{folder / MANIFEST}: target {manifest.target!r} is not one this deploycc knows "
                            f"({', '.join(registered())}): rebuild the artifact or upgrade deploycc")
    target = get_target(manifest.target)
    settings = built_settings(target, manifest, folder).with_device(device)
    if extra:
        settings = replace(settings, extra={**settings.extra, **extra})
    reason = target.availability(settings)
    if reason is not None:
        raise MissingDependencyError(f"artifact {folder} needs target '{target.name}', unavailable here: {reason}")
    try:
        runner = open_runner(target, file, settings)
    except DeployccError:
        raise
    except Exception as exc:  # a file that passed its hash but that the backend cannot load
        raise ArtifactError(f"{file} could not be loaded by the {target.name} runner ({type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''})") from None
    return OpenedArtifact(folder, manifest, target, settings, runner)


def reference_checkpoint(folder: Path, manifest: Manifest) -> Checkpoint:
    """The checkpoint an artifact was built from: its copy in the folder, checked against the manifest."""
    copy_path = Path(folder) / manifest.checkpoint.copy
    path = copy_path if copy_path.is_file() else Path(manifest.checkpoint.path)
    checkpoint = load_checkpoint(path)
    if checkpoint.sha256 != manifest.checkpoint.sha256:
        raise ArtifactError(f"checkpoint {path} does not match the one {folder} was built from (sha256 differs)")
    return checkpoint


def is_artifact(path: Path | str) -> bool:
    """Whether `path` names an artifact folder or a file inside one, or an artifact folder whose build was
    killed between publish's two renames (its previous contents wait beside it; opening restores them)."""
    folder = artifact_folder(path)
    return (folder / MANIFEST).is_file() or (folder.parent / f".{folder.name}.previous" / MANIFEST).is_file()


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    """The manifest fields people look at first (for reports)."""
    return {"model": manifest.model, "target": manifest.target, "device": manifest.device,
            "checkpoint_sha256": manifest.checkpoint.sha256, "parity_passed": manifest.parity_passed}
