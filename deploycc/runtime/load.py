"""Loading: any artifact, checkpoint or preset into a Predictor (the one place `deploycc.api.load` comes from)."""

from __future__ import annotations

import os

import torch

from .predictor import Predictor
from .validate import Rules, check_unseen_policy


def load(source: str | os.PathLike, device: str | None = None, unseen_elements: str = "warn",
         memory_budget: float | None = None) -> Predictor:
    """A predictor for an artifact folder or file, a checkpoint path, or a preset name.

    `unseen_elements`: what to do with a structure holding an element absent from the training data:
    "warn" (UnseenElementWarning, the default), "refuse" (UserInputError) or "allow".
    `memory_budget`: bytes one call may use (default: half the available memory, see runtime/predictor.py)."""
    from ..artifact.open import is_artifact, open_artifact
    from ..checkpoint import load_checkpoint
    from ..targets.base import get_target
    from ..targets.eager import eager_runner

    check_unseen_policy(unseen_elements)
    if is_artifact(source):
        opened = open_artifact(source, device)
        config = opened.manifest.model_config
        rules = Rules.make(opened.label, int(config["max_z"]), float(config["cutoff"]), opened.manifest.elements,
                           unseen_elements, opened.settings.neighbours.max)
        return Predictor(opened.runner, opened.settings, rules, memory_budget)
    checkpoint = load_checkpoint(source)
    settings = get_target("eager").settings(device)
    rules = Rules.make(f"{checkpoint.name}/eager", checkpoint.config.max_z, checkpoint.config.cutoff,
                       checkpoint.elements, unseen_elements)
    return Predictor(eager_runner(checkpoint.model, settings.device), settings, rules, memory_budget)


def reference_predictor(source: str | os.PathLike, unseen_elements: str = "warn", dtype: str = "float32"
                        ) -> Predictor:
    """The eager model an artifact was built from (its reference checkpoint), on the CPU; checkpoints and
    presets as they are.  `dtype="float64"`: the same weights evaluated in double precision, the path for
    finite-difference checks of forces (artifacts' float32 energies round to ~1e-4 eV on 60 atoms)."""
    from ..artifact.layout import artifact_folder
    from ..artifact.manifest import read_manifest
    from ..artifact.open import is_artifact, reference_checkpoint
    from ..targets.base import get_target
    from ..targets.eager import eager_runner

    from ..checkpoint import load_checkpoint
    from ..errors import UserInputError

    if dtype not in ("float32", "float64"):
        raise UserInputError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    check_unseen_policy(unseen_elements)
    if is_artifact(source):
        folder = artifact_folder(source)
        manifest = read_manifest(folder)
        checkpoint, label = reference_checkpoint(folder, manifest), manifest.model
    else:
        checkpoint = load_checkpoint(source)
        label = checkpoint.name
    suffix = "" if dtype == "float32" else "-float64"
    rules = Rules.make(f"{label}/eager{suffix}", checkpoint.config.max_z, checkpoint.config.cutoff,
                       checkpoint.elements, unseen_elements)
    runner = eager_runner(checkpoint.model, "cpu", getattr(torch, dtype))
    return Predictor(runner, get_target("eager").settings("cpu"), rules)
