"""Versions of the libraries an artifact depends on (recorded in manifests and checkpoints)."""

from __future__ import annotations

import platform
from importlib import metadata


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
