"""Random tiny students and molecules shared by the target tests (built in code, seeded)."""

from __future__ import annotations

import numpy as np
import torch

from deploycc.model import PRESET_CONFIGS, StudentModel


def tiny_model(seed: int = 0, ref_scale: float = 1000.0, scale: float = 1.0, shift: float = 0.0) -> StudentModel:
    """A random tiny student with large element references (as real total energies have)."""
    torch.manual_seed(seed)
    model = StudentModel(PRESET_CONFIGS["tiny"]).eval()
    with torch.no_grad():
        model.element_ref.copy_(-torch.rand(model.element_ref.shape) * ref_scale)
        model.scale.fill_(scale)
        model.shift.fill_(shift)
    return model


def molecule(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random atomic numbers (1..9) and positions with every distance above 0.8 A."""
    points: list[np.ndarray] = []
    box = 1.6 * max(n, 2) ** (1 / 3)
    while len(points) < n:
        p = rng.uniform(0.0, box, 3)
        if all(np.linalg.norm(p - q) > 0.8 for q in points):
            points.append(p)
    return rng.integers(1, 10, n), np.array(points, dtype=np.float32)


def molecules(sizes: list[int], seed: int = 1) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = [molecule(n, rng) for n in sizes]
    return [z for z, _ in pairs], [r for _, r in pairs]
