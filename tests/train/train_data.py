"""Labelled datasets for the training tests, built in code (labels from a fixed random 'teacher' student)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deploycc.data.schema import Structures, write_h5

from helpers import evaluate, make_model, random_molecule


def labelled_molecules(count: int = 40, seed: int = 5) -> Structures:
    """Molecules of 3-8 atoms labelled by a fixed random ultra-tiny teacher, two per group, split by group."""
    rng = np.random.default_rng(seed)
    mols = [random_molecule(rng, int(rng.integers(3, 9))) for _ in range(count)]
    labels = evaluate(make_model(seed=42, preset="ultra-tiny"), mols, torch.float32)
    return Structures(numbers=[m[0] for m in mols], positions=[m[1] for m in mols], energies=labels.energies,
                      forces=[labels.forces_of(k) for k in range(count)], group=np.arange(count) // 2,
                      splits={"train": np.arange(0, 28), "val": np.arange(28, 34), "test": np.arange(34, 40)})


def write_labelled(path: Path, count: int = 40, seed: int = 5) -> Path:
    write_h5(labelled_molecules(count, seed), path)
    return path
