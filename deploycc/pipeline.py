"""build(): export -> reload -> parity -> manifest, atomic and cached; verify() of a built artifact."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .artifacts import (MANIFEST, MANIFEST_VERSION, PARITY, REFERENCE, artifact_dir, build_lock,
                        clean_stale_staging, publish, read_manifest, recover, staging_dir, storage_errors,
                        verify_hashes, write_json)
from .checkpoint import Checkpoint, file_sha256, load_checkpoint
from .data.schema import Structures, read_structures
from .errors import ArtifactError, MissingDependencyError, ParityError, UnsupportedModelError
from .parity import ParityReport, check_parity
from .paths import artifacts_root, default_calib_file
from .targets.base import Runner, get_target, open_runner, registered
from .targets.eager import EagerRunner
from .targets.settings import TargetSettings, load_settings
from .versions import library_versions, source_fingerprint

Stage = Callable[[str], None]


@dataclass
class BuildResult:
    """The outcome of building one target."""

    model: str
    target: str
    folder: Path
    status: str  # built | cached
    artifact: Path
    parity: dict[str, Any]
    seconds: float
    manifest: dict[str, Any] = field(default_factory=dict)


def calibration_structures(path: Path | None = None) -> Structures:
    """Validation structures for parity: `calib/molecules.h5` unless another file is given."""
    return read_structures(path or default_calib_file())


def _cache_key(checkpoint_sha: str, settings: TargetSettings, versions: dict[str, str], calib_sha: str) -> str:
    blob = json.dumps([checkpoint_sha, settings.to_dict(), versions, calib_sha], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _cached(final: Path, key: str) -> dict[str, Any] | None:
    try:
        manifest = read_manifest(final)
        verify_hashes(final, manifest)
    except ArtifactError:
        return None
    if manifest.get("cache_key") == key and manifest.get("parity", {}).get("passed"):
        return manifest
    return None


def resolve_settings(target_name: str, device: str | None) -> TargetSettings:
    """The target's settings file, with the device overridden from the command line."""
    return load_settings(target_name).with_device(device)


def run_parity(reference: Checkpoint, runner: Runner, settings: TargetSettings, data: Structures) -> ParityReport:
    eager = EagerRunner(copy.deepcopy(reference.model), "cpu")
    return check_parity(eager.evaluate, runner.evaluate, data.numbers, data.positions, settings.tolerances,
                        batch_size=min(16, settings.batch.max), max_atoms=settings.atoms.max, cells=data.cells,
                        pbc=data.pbc)


def build(
    source: str,
    target_name: str,
    out_root: Path | None = None,
    device: str | None = None,
    force: bool = False,
    calib: Path | None = None,
    stage: Stage = lambda name: None,
) -> BuildResult:
    """Build one artifact; on parity failure raise ParityError and leave any previous artifact untouched."""
    started = time.perf_counter()
    target = get_target(target_name)
    settings = resolve_settings(target_name, device)
    reason = target.availability(settings)
    if reason is not None:
        raise MissingDependencyError(f"target '{target_name}' cannot build here: {reason}")
    checkpoint = load_checkpoint(source)
    if checkpoint.config.periodic and not target.periodic:
        raise UnsupportedModelError(f"target '{target_name}' does not take periodic inputs yet; periodic models "
                                    f"build for: {', '.join(n for n, t in registered().items() if t.periodic)}")
    calib_path = Path(calib) if calib else default_calib_file(checkpoint.config.periodic)
    data = calibration_structures(calib_path)
    final = artifact_dir(out_root or artifacts_root(), checkpoint.name, target_name)
    # The source hash makes a code change (same version number, e.g. a git checkout) rebuild instead of reuse.
    versions = {**library_versions(), "deploycc-source-sha256": source_fingerprint()}
    key = _cache_key(checkpoint.sha256, settings, versions, file_sha256(calib_path))
    with storage_errors(final), build_lock(final):
        recover(final)
        clean_stale_staging(final)
        cached = None if force else _cached(final, key)
        if cached is not None:
            artifact = final / cached["artifact"]["file"]
            return BuildResult(checkpoint.name, target_name, final, "cached", artifact, cached["parity"],
                               time.perf_counter() - started, cached)
        staged = staging_dir(final)
        try:
            manifest = _build_into(staged, target, settings, checkpoint, data, calib_path, key, versions, stage,
                                   started)
            stage("publish")
            publish(staged, final)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
    return BuildResult(checkpoint.name, target_name, final, "built", final / manifest["artifact"]["file"],
                       manifest["parity"], time.perf_counter() - started, manifest)


def _build_into(staged: Path, target, settings: TargetSettings, checkpoint: Checkpoint, data: Structures,
                calib_path: Path, key: str, versions: dict[str, str], stage: Stage, started: float) -> dict[str, Any]:
    stage("export")
    exported = target.export(copy.deepcopy(checkpoint.model), settings, staged)
    shutil.copyfile(checkpoint.path, staged / REFERENCE)
    stage("reload")
    runner = open_runner(target, exported.path, settings)
    stage("parity")
    report = run_parity(checkpoint, runner, settings, data)
    parity = {**report.to_dict(), "data": str(calib_path), "reference": "eager fp32 on cpu"}
    write_json(staged / PARITY, parity)
    if not report.passed:
        raise ParityError(f"{target.name} artifact failed parity against eager", report)
    manifest = {
        "format_version": MANIFEST_VERSION,
        "model": checkpoint.name,
        "checkpoint": {"path": str(checkpoint.path), "sha256": checkpoint.sha256, "copy": REFERENCE},
        "model_config": checkpoint.config.to_dict(),
        "checkpoint_metadata": {k: checkpoint.metadata.get(k) for k in ("teacher", "epochs", "test_metrics")},
        "elements": checkpoint.elements,  # training elements (None = unknown), for unseen-element checks
        "target": target.name,
        "settings": settings.to_dict(),
        "device": settings.device,
        "artifact": {"file": exported.path.name, "sha256": file_sha256(exported.path),
                     "bytes": exported.path.stat().st_size},
        "notes": exported.notes,
        "library_versions": versions,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.perf_counter() - started, 2),
        "parity": parity,
        "cache_key": key,
    }
    write_json(staged / MANIFEST, manifest)
    return manifest


def open_artifact(folder: Path, device: str | None = None) -> tuple[Runner, dict[str, Any], TargetSettings]:
    """A runner on a built artifact after checking its manifest and hashes."""
    folder = Path(folder)
    folder = folder.parent if folder.is_file() else folder
    manifest = read_manifest(folder)
    artifact = verify_hashes(folder, manifest)
    settings = resolve_settings(manifest["target"], None)
    settings = TargetSettings(**{**settings.to_dict(), **_settings_from_manifest(manifest, settings)})
    settings = settings.with_device(device)
    target = get_target(manifest["target"])
    reason = target.availability(settings)
    if reason is not None:
        raise MissingDependencyError(f"artifact {folder} needs target '{target.name}', unavailable here: {reason}")
    return open_runner(target, artifact, settings), manifest, settings


def _settings_from_manifest(manifest: dict[str, Any], base: TargetSettings) -> dict[str, Any]:
    """The settings an artifact was built with.  Keys this version does not know (a tolerance renamed or added
    by another deploycc version) are ignored; missing ones keep the target file's values."""
    from dataclasses import asdict, fields

    from .targets.settings import Profile, Tolerances

    def known(cls, values: dict[str, Any]) -> dict[str, Any]:
        names = {f.name for f in fields(cls)}
        return {k: v for k, v in values.items() if k in names}

    raw = known(TargetSettings, dict(manifest["settings"]))
    raw["batch"] = Profile(**known(Profile, raw["batch"]))
    raw["atoms"] = Profile(**known(Profile, raw["atoms"]))
    raw["tolerances"] = Tolerances(**{**asdict(base.tolerances), **known(Tolerances, raw["tolerances"])})
    return raw


def reference_checkpoint(folder: Path, manifest: dict[str, Any]) -> Checkpoint:
    """The checkpoint an artifact was built from: its copy in the folder, checked against the manifest."""
    copy_path = Path(folder) / manifest["checkpoint"].get("copy", REFERENCE)
    path = copy_path if copy_path.is_file() else Path(manifest["checkpoint"]["path"])
    checkpoint = load_checkpoint(path)
    if checkpoint.sha256 != manifest["checkpoint"]["sha256"]:
        raise ArtifactError(f"checkpoint {path} does not match the one {folder} was built from (sha256 differs)")
    return checkpoint
