"""build(): export -> reload -> parity -> manifest, atomic and cached; the parity run that verify also calls."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .artifact.layout import (MANIFEST, PARITY, REFERENCE, artifact_dir, build_lock, check_destination,
                              clean_stale_staging, publish, recover, staging_dir, storage_errors, write_json)
from .artifact.manifest import ArtifactFile, CheckpointRef, Manifest, read_manifest
from .artifact.open import artifact_file
from .checkpoint import CONFIG_DOMAIN, Checkpoint, file_sha256, load_checkpoint
from .data.schema import Structures, read_structures
from .errors import ArtifactError, CheckpointError, MissingDependencyError, ParityError, UserInputError
from .parity import ParityReport, check_parity
from .paths import artifacts_root, default_calib_file
from .runtime.neighbours import Structure, structures_of
from .runtime.validate import Rules, validated
from .targets.base import Runner, Target, get_target, open_runner
from .targets.eager import eager_runner
from .targets.settings import TargetSettings
from .versions import library_versions, source_fingerprint

Stage = Callable[[str], None]
MIN_CALIBRATION_STRUCTURES = 4
MIN_CALIBRATION_PAIRS = 20  # pairs within the cutoff, over all calibration structures


@dataclass
class BuildResult:
    """The outcome of building one target."""

    model: str
    target: str
    folder: Path
    status: str  # built | cached
    artifact: Path
    manifest: Manifest
    seconds: float

    @property
    def parity(self) -> dict:
        return self.manifest.parity


def calibration_structures(path: Path | None, cutoff: float, rules: Rules | None = None,
                           data: Structures | None = None) -> list[Structure]:
    """Parity structures (default: the shipped calibration molecules), each checked by `rules` like any input
    (the first bad one is refused naming the file and its index); a set too small to test anything (few
    structures, or hardly any pairs within the cutoff) is refused.  `data`: the file's contents, if read."""
    path = Path(path) if path else default_calib_file()
    structures = structures_of(read_structures(path) if data is None else data)
    rules = rules or Rules.make(path.name, CONFIG_DOMAIN["max_z"][2], cutoff, unseen_elements="allow")
    try:
        halves = [validated(s, f"structure {k}", rules, cutoff)[1] for k, s in enumerate(structures)]
    except UserInputError as exc:
        raise UserInputError(f"{path}: {exc}") from None
    pairs = sum(len(half.i) for half in halves)
    if len(structures) < MIN_CALIBRATION_STRUCTURES or pairs < MIN_CALIBRATION_PAIRS:
        raise UserInputError(f"{path}: {len(structures)} structures with {pairs} pairs within {cutoff:g} Å is too "
                             f"small a calibration set (needs >= {MIN_CALIBRATION_STRUCTURES} structures and "
                             f">= {MIN_CALIBRATION_PAIRS} pairs)")
    return structures


def run_parity(reference: Checkpoint, runner: Runner, settings: TargetSettings, structures: list[Structure]
               ) -> ParityReport:
    """Parity of `runner` against the reference checkpoint's eager model (fp32, CPU)."""
    eager = eager_runner(copy.deepcopy(reference.model), "cpu")
    try:
        return check_parity(eager, runner, structures, settings.tolerances, reference.model.cutoff,
                            batch_size=16, max_atoms=settings.atoms.max)
    except UserInputError as exc:  # the reference itself is non-finite: say which checkpoint
        raise CheckpointError(f"checkpoint {reference.path or reference.name}: {exc}") from None


def _cache_key(checkpoint_sha: str, settings: TargetSettings, versions: dict[str, str], calib_sha: str) -> str:
    blob = json.dumps([checkpoint_sha, settings.to_dict(), versions, calib_sha], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _cached(final: Path, key: str) -> Manifest | None:
    try:
        manifest = read_manifest(final)
        artifact_file(final, manifest)
    except ArtifactError:
        return None
    return manifest if manifest.cache_key == key and manifest.parity_passed else None


def build(source: str, target_name: str, out_root: Path | None = None, device: str | None = None,
          force: bool = False, calib: Path | None = None, stage: Stage = lambda name: None) -> BuildResult:
    """Build one artifact; on parity failure raise ParityError and leave any previous artifact untouched."""
    started = time.perf_counter()
    target = get_target(target_name)
    settings = target.settings(device)
    reason = target.availability(settings)
    if reason is not None:
        raise MissingDependencyError(f"target '{target_name}' cannot build here: {reason}")
    checkpoint = load_checkpoint(source)
    final = artifact_dir(out_root or artifacts_root(), checkpoint.name, target_name)
    check_destination(final)
    calib_path = Path(calib) if calib else default_calib_file(checkpoint.config.periodic)
    rules = Rules.make(f"{checkpoint.name}/{target_name}", checkpoint.config.max_z, checkpoint.config.cutoff,
                       unseen_elements="allow")  # calibration may hold elements the model never saw
    structures = calibration_structures(calib_path, checkpoint.model.cutoff, rules)
    # The source hash makes a code change (same version number, e.g. a git checkout) rebuild instead of reuse.
    versions = {**library_versions(), "deploycc-source-sha256": source_fingerprint()}
    key = _cache_key(checkpoint.sha256, settings, versions, file_sha256(calib_path))
    with storage_errors(final), build_lock(final):
        recover(final)
        clean_stale_staging(final)
        cached = None if force else _cached(final, key)
        if cached is not None:
            return BuildResult(checkpoint.name, target_name, final, "cached", final / cached.artifact.file, cached,
                               time.perf_counter() - started)
        staged = staging_dir(final)
        try:
            manifest = _build_into(staged, target, settings, checkpoint, structures, calib_path, key, versions,
                                   stage, started)
            stage("publish")
            publish(staged, final)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
    return BuildResult(checkpoint.name, target_name, final, "built", final / manifest.artifact.file, manifest,
                       time.perf_counter() - started)


def _build_into(staged: Path, target: Target, settings: TargetSettings, checkpoint: Checkpoint,
                structures: list[Structure], calib_path: Path, key: str, versions: dict[str, str], stage: Stage,
                started: float) -> Manifest:
    stage("export")
    exported = target.export_checkpoint(checkpoint, settings, staged)
    shutil.copyfile(checkpoint.path, staged / REFERENCE)
    stage("reload")
    runner = open_runner(target, exported.path, settings)
    stage("parity")
    report = run_parity(checkpoint, runner, settings, structures)
    parity = {**report.to_dict(), "data": str(calib_path), "reference": "eager fp32 on cpu"}
    write_json(staged / PARITY, parity)
    if not report.passed:
        raise ParityError(f"{target.name} artifact failed parity against eager" + _nonfinite_hint(report), report)
    manifest = Manifest(
        model=checkpoint.name, target=target.name, device=settings.device,
        checkpoint=CheckpointRef(str(checkpoint.path), checkpoint.sha256, REFERENCE),
        artifact=ArtifactFile(exported.path.name, file_sha256(exported.path), exported.path.stat().st_size),
        settings=settings.to_dict(), model_config=checkpoint.config.to_dict(), parity=parity, cache_key=key,
        elements=checkpoint.elements,
        checkpoint_metadata={k: checkpoint.metadata.get(k) for k in ("teacher", "epochs", "test_metrics")},
        notes=exported.notes, library_versions=versions,
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        build_seconds=round(time.perf_counter() - started, 2))
    write_json(staged / MANIFEST, manifest.to_dict())
    return manifest


def _nonfinite_hint(report: ParityReport) -> str:
    return "; its outputs hold NaN or infinite values" if any(c.nan for c in report.checks) else ""
