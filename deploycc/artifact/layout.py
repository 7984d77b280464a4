"""Artifact folders: names, atomic JSON, build locks, staging, publish by rename, recovery, storage errors."""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import ArtifactError, StorageError, UserInputError

MANIFEST = "manifest.json"
PARITY = "parity.json"
REFERENCE = "reference.pt"


def artifact_dir(root: Path, model: str, target: str) -> Path:
    """Where `deploycc build` puts an artifact: <root>/<model>/<target>, through a symlinked folder to its
    real place (so publishing replaces the real folder and keeps the link)."""
    folder = Path(root) / model / target
    return folder.resolve() if folder.is_symlink() else folder


def artifact_folder(path: Path | str) -> Path:
    """The artifact folder of a path that names the folder or a file inside it."""
    path = Path(path)
    return path.parent if path.is_file() else path


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None, so that it is strict JSON (null)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_text_atomic(path: Path, text: str) -> None:
    """Write text atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write strict JSON atomically; non-finite numbers are written as null."""
    text = json.dumps(json_safe(payload), indent=2, sort_keys=False, default=str, allow_nan=False)
    write_text_atomic(path, text + "\n")


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


def storage_error(exc: OSError, where: object, on_full: str, on_unwritable: str) -> StorageError | None:
    """A full or unwritable disk as one line (what to do after the colon), or None for any other OSError."""
    if exc.errno in _DISK_FULL:
        return StorageError(f"no space left on the device while writing {where}: {on_full}")
    if exc.errno in _NOT_WRITABLE:
        return StorageError(f"cannot write {where} ({os.strerror(exc.errno)}): {on_unwritable}")
    return None


@contextmanager
def storage_errors(final: Path) -> Iterator[None]:
    """Turn a full or unwritable disk during a build into one line (StorageError) instead of a traceback."""
    try:
        yield
    except OSError as exc:
        error = storage_error(exc, exc.filename or final, f"free some space and build again; the previous artifact "
                              f"in {final} is unchanged", "build into a writable folder (--out)")
        if error is None:
            raise
        raise error from None


def check_destination(final: Path) -> None:
    """Before any work: `final` is (or can become) a folder, below folders only, in a writable place."""
    if final.exists() and not final.is_dir():
        raise UserInputError(f"{final} exists and is not a folder: choose another --out")
    existing = final
    while not existing.exists():
        if existing.is_symlink():  # a dangling link: building would write through it into nowhere
            raise UserInputError(f"{existing} is a broken symbolic link: remove it or choose another --out")
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(f"cannot build into {final}: {existing} is a file, not a folder (choose another --out)")
    place = existing.parent if existing == final else existing  # the lock, staging folder and backup go beside it
    if not os.access(place, os.W_OK | os.X_OK):
        raise StorageError(f"cannot write {final}: {place} is not writable (build into a writable folder: --out)")


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
