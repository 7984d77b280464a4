"""Shared fixtures: a small random-weights checkpoint and a tiny calibration file, built in code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deploycc.checkpoint import save_checkpoint
from deploycc.data.schema import Structures, write_h5
from deploycc.model import PRESET_CONFIGS, StudentModel

torch.set_num_threads(1)


def random_molecule(rng: np.random.Generator, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers (H C N O) and positions with every pair at least 0.95 Angstrom apart."""
    numbers = rng.choice([1, 1, 6, 7, 8], size=n_atoms)
    positions: list[np.ndarray] = []
    while len(positions) < n_atoms:
        candidate = rng.uniform(-1.0, 1.0, 3) * (1.0 + 0.45 * n_atoms ** (1 / 3))
        if all(np.linalg.norm(candidate - p) >= 0.95 for p in positions):
            positions.append(candidate)
    return numbers.astype(np.int64), np.array(positions)


def make_model(seed: int = 0, preset: str = "tiny") -> StudentModel:
    """A random model with a realistic output scale (so parity tests are sensitive)."""
    torch.manual_seed(seed)
    model = StudentModel(PRESET_CONFIGS[preset])
    with torch.no_grad():
        model.scale.fill_(2.0)
        model.element_ref[1], model.element_ref[6] = -13.6, -1030.0
        model.element_ref[7], model.element_ref[8] = -1480.0, -2040.0
    return model.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny-test.pt"
    save_checkpoint(make_model(), path, {"teacher": "none", "note": "random weights for tests"})
    return path


@pytest.fixture(scope="session")
def calib_file(tmp_path_factory) -> Path:
    """Twelve labelled molecules of 2-30 atoms (labels from a different random model)."""
    rng = np.random.default_rng(7)
    sizes = [2, 3, 5, 8, 11, 13, 17, 20, 23, 26, 29, 30]
    mols = [random_molecule(rng, n) for n in sizes]
    labeller = make_model(seed=99)
    energies, forces = [], []
    for z, r in mols:
        pos = torch.tensor(r[None], dtype=torch.float32, requires_grad=True)
        energy = labeller(torch.tensor(z[None]), pos)
        (grad,) = torch.autograd.grad(energy.sum(), pos)
        energies.append(float(energy))
        forces.append(-grad[0].numpy().astype(np.float64))
    data = Structures(numbers=[m[0] for m in mols], positions=[m[1] for m in mols], energies=np.array(energies),
                      forces=forces, group=np.arange(len(mols)),
                      splits={"train": np.arange(8), "val": np.arange(8, 10), "test": np.arange(10, 12)})
    path = tmp_path_factory.mktemp("calib") / "calib.h5"
    write_h5(data, path)
    return path
