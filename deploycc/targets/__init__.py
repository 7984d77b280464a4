"""Deployment targets, one module each, registered by name."""

from __future__ import annotations

import importlib

BUILTIN = ("eager", "torchscript", "onnx", "onnx_fp16", "aoti", "cuda_graph", "cuda_graph_fused", "trt")


def load_builtin_targets() -> None:
    for module in BUILTIN:
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{module}":
                raise
