"""Artifact folders: layout, manifests, hashes, atomic replacement and build locks."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .checkpoint import file_sha256
from .errors import ArtifactError, StorageError

MANIFEST = "manifest.json"
PARITY = "parity.json"
REFERENCE = "reference.pt"
MANIFEST_VERSION = 1


def artifact_dir(root: Path, model: str, target: str) -> Path:
    return Path(root) / model / target


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (temporary file in the same folder, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False, default=str)
            handle.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of an artifact folder; clear errors for missing, unreadable or newer manifests."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    path = folder / MANIFEST
    recover_if_interrupted(folder)
    if not folder.is_dir():
        raise ArtifactError(f"artifact folder {folder} does not exist; build it with `deploycc build`")
    if not path.is_file():
        raise ArtifactError(f"{folder} has no {MANIFEST}: not a deploycc artifact (rebuild it with `deploycc build`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc})") from None
    version = int(manifest.get("format_version", 0))
    if version > MANIFEST_VERSION:
        raise ArtifactError(f"{path} has format_version {version}; this deploycc reads up to {MANIFEST_VERSION}: upgrade deploycc")
    for key in ("target", "artifact", "settings"):
        if key not in manifest:
            raise ArtifactError(f"{path} lacks '{key}': rebuild the artifact")
    return manifest


def verify_hashes(folder: Path, manifest: dict[str, Any]) -> Path:
    """Check the artifact file against its recorded sha256; return its path."""
    artifact = Path(folder) / manifest["artifact"]["file"]
    if not artifact.is_file():
        raise ArtifactError(f"artifact file {artifact} is missing; rebuild with `deploycc build --force`")
    actual = file_sha256(artifact)
    if actual != manifest["artifact"]["sha256"]:
        raise ArtifactError(f"{artifact} does not match its manifest (sha256 {actual[:12]} != "
                            f"{manifest['artifact']['sha256'][:12]}): it was modified; rebuild with `deploycc build --force`")
    return artifact


@contextmanager
def build_lock(final: Path) -> Iterator[None]:
    """An exclusive lock per artifact folder: a second concurrent build is refused, not interleaved."""
    final.parent.mkdir(parents=True, exist_ok=True)
    lock_path = final.parent / f".{final.name}.lock"
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArtifactError(f"another build is writing {final} right now; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def staging_dir(final: Path) -> Path:
    """A fresh temporary folder beside the final one (same filesystem, so the final rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(staged, 0o755)  # mkdtemp makes it private; a published artifact is readable like any folder
    return staged


def recover(final: Path) -> None:
    """Undo a swap interrupted between its two renames: restore the previous artifact."""
    backup = final.parent / f".{final.name}.previous"
    if backup.is_dir() and not final.exists():
        os.replace(backup, final)
    elif backup.is_dir():
        shutil.rmtree(backup, ignore_errors=True)


def recover_if_interrupted(final: Path) -> None:
    """Opening an artifact whose build was killed between publish's two renames restores the previous one.

    Only when no build holds the folder's lock: a live build is mid-swap and finishes it itself."""
    final = Path(final)
    if final.exists() or not (final.parent / f".{final.name}.previous").is_dir():
        return
    try:
        with open(final.parent / f".{final.name}.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ArtifactError(f"{final} is being replaced by a build right now; wait for it to finish") from None
            try:
                recover(final)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return  # a read-only place: nothing can be recovered from here


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


@contextmanager
def storage_errors(final: Path) -> Iterator[None]:
    """Turn a full or unwritable disk during a build into one line (StorageError) instead of a traceback."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or final
        if exc.errno in _DISK_FULL:
            raise StorageError(f"no space left on the device while writing {where}: free some space and build "
                               f"again; the previous artifact in {final} is unchanged") from None
        if exc.errno in _NOT_WRITABLE:
            raise StorageError(f"cannot write {where} ({os.strerror(exc.errno)}): build into a writable folder "
                               "(--out)") from None
        raise


def publish(staged: Path, final: Path) -> None:
    """Replace `final` by `staged` with renames only; the previous artifact survives any failure before."""
    backup = final.parent / f".{final.name}.previous"
    if backup.exists():
        shutil.rmtree(backup)
    if final.exists():
        os.replace(final, backup)
    os.replace(staged, final)
    shutil.rmtree(backup, ignore_errors=True)


def clean_stale_staging(final: Path) -> None:
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
