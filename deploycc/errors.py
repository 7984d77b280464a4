"""User-facing errors: the CLI turns each into one line and an exit code; bugs keep their tracebacks.

Exit codes: 1 parity failure, 2 missing dependency or device (e.g. TensorRT, a GPU), 64 usage error (an unknown
flag, a value of the wrong type; EX_USAGE), 65 bad input (arguments, files, structures; EX_DATAERR), 74 disk
full or not writable (EX_IOERR), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
Anything else non-zero is a bug and prints a traceback.  docs/bad-inputs.md tables every bad input.
"""

from __future__ import annotations


class DeployccError(Exception):
    """A problem with the user's input or environment; printed as one line."""

    exit_code = 1


class UserInputError(DeployccError):
    """Bad arguments, files or structures."""

    exit_code = 65


class MissingDependencyError(DeployccError):
    """An optional package or device that this request needs is not available."""

    exit_code = 2


class ParityError(DeployccError):
    """An artifact does not reproduce the eager model within tolerance; carries the parity report."""

    exit_code = 1

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class CheckpointError(UserInputError):
    """A checkpoint is missing, corrupt or incompatible with its model."""


class ArtifactError(UserInputError):
    """An artifact folder is missing, incomplete, tampered with or incompatible."""


class StorageError(DeployccError):
    """The disk is full or not writable while writing an artifact (EX_IOERR); the previous artifact is kept."""

    exit_code = 74


class UnseenElementWarning(UserWarning):
    """A structure holds an element absent from the model's training data: its predictions are extrapolation."""


class UnsupportedModelError(UserInputError):
    """A target cannot export this kind of model (e.g. a periodic model for a molecules-only target)."""
