"""Where an MD run writes (nve.traj, md.json, energy.png, compare.traj), checked before any work, and disk
failures during the run as one line."""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..artifact.layout import storage_error
from ..errors import StorageError, UserInputError


OUTPUT_FILES = ("nve.traj", "md.json", "energy.png")  # plus compare.traj with a second model


def output_files(compare: bool = False) -> tuple[str, ...]:
    """The names `run_md` and `write_outputs` write into the output folder."""
    return OUTPUT_FILES[:1] + (("compare.traj",) if compare else ()) + OUTPUT_FILES[1:]


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_outputs(out: Path | str, structure: Path | str | None = None, compare: bool = False) -> Path:
    """`out` if the MD outputs (trajectories, md.json, energy.png) can be written there without touching the
    input structure; checked before any work, creating nothing. A folder in the way, a path below a file or
    the input structure are user errors; an unwritable place is a StorageError."""
    out = Path(out)

    def same_as_input(path: Path) -> bool:
        return (structure is not None and path.exists() and Path(structure).exists()
                and os.path.samefile(path, structure))

    try:
        if os.path.lexists(out) and not out.is_dir():
            if same_as_input(out):
                raise UserInputError(f"--out {out} is the input structure: give a folder for the MD outputs")
            what = "a broken link" if not out.exists() else "a file"
            raise UserInputError(f"--out {out} is {what}, not a folder: MD writes {', '.join(output_files(compare))} "
                                 f"into a folder")
        existing = out.absolute()
        while not os.path.lexists(existing):
            existing = existing.parent
        if not existing.is_dir():
            raise UserInputError(f"--out {out}: {existing} is {'a file' if existing.exists() else 'a broken link'}, "
                                 f"not a folder")
        longest = os.pathconf(existing, "PC_NAME_MAX")
        for part in out.absolute().relative_to(existing).parts:
            if len(os.fsencode(part)) > longest:
                raise UserInputError(f"--out {out}: the name {part[:40]}... is longer than the {longest} bytes a "
                                     f"file name may have here")
        if not os.access(existing, os.W_OK | os.X_OK):
            why = "is on a read-only file system" if _read_only(existing) else "is not writable"
            raise StorageError(f"cannot write the MD outputs to {out}: {existing} {why}")
        for name in output_files(compare):
            path = out / name
            if not os.path.lexists(path):
                continue
            if same_as_input(path):
                raise UserInputError(f"--out {out}: {path} is the input structure, which the run would overwrite; "
                                     f"write the MD outputs to another folder")
            if path.is_dir():
                raise UserInputError(f"--out {out}: {path} is a folder; the run writes its {name} there as a file")
            if not path.exists():
                raise UserInputError(f"--out {out}: {path} is a broken link")
            if not os.access(path, os.W_OK):
                raise StorageError(f"cannot overwrite {path}: it is not writable")
    except OSError as exc:  # e.g. a name too long
        raise UserInputError(f"--out {out}: {exc.strerror or exc}") from None
    return out


@contextmanager
def storage_errors(out: Path) -> Iterator[None]:
    """A full or unwritable disk while writing the MD outputs becomes one line (StorageError)."""
    try:
        yield
    except OSError as exc:
        error = storage_error(exc, exc.filename or out, "free some space or write the MD outputs elsewhere (--out)",
                              "write the MD outputs to a writable folder (--out)")
        if error is not None:
            raise error from None
        if exc.errno == errno.ENAMETOOLONG:
            raise UserInputError(f"cannot write {out}: {os.strerror(exc.errno)}") from None
        raise
