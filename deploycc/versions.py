"""Versions of the libraries an artifact depends on (recorded in manifests and checkpoints)."""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str]:
    """Installed versions of the packages that decide what an artifact computes."""
    names = ("deploycc", "torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxsim", "onnxscript",
             "tensorrt", "ase", "h5py")
    found = {name: _version(name) for name in names}
    out = {name: v for name, v in found.items() if v is not None}
    out["python"] = platform.python_version()
    return out


# The package code that decides what an exported artifact computes: the model, the exporters and runners,
# the periodic inputs.  Its hash is part of a build's cache key, so that changing this code (with the
# same version number, e.g. a git checkout) rebuilds artifacts instead of reusing stale ones.
_ARTIFACT_SOURCES = ("model", "targets", "runtime/neighbours.py", "checkpoint.py")


def source_fingerprint() -> str:
    """sha256 over the artifact-defining source files of this deploycc installation."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for entry in _ARTIFACT_SOURCES:
        path = root / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(file.relative_to(root).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def version_line() -> str:
    """One short line: deploycc, torch and ONNX Runtime (CPU or GPU build) versions, and Python's."""
    found = library_versions()
    runtime = found.get("onnxruntime-gpu") or found.get("onnxruntime") or "not installed"
    return (f"deploycc {found.get('deploycc', 'unknown')} (torch {found.get('torch', 'not installed')}, "
            f"onnxruntime {runtime}, python {found['python']})")
