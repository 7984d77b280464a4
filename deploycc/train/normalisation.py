"""Per-element reference energies (least squares) and the scale/shift of the learned part."""

from __future__ import annotations

import numpy as np

from ..data.schema import Structures


def fit_element_references(data: Structures, max_z: int) -> np.ndarray:
    """Reference energy per element so that sum_i ref(Z_i) best fits the total energies (least squares)."""
    counts = np.zeros((len(data), max_z + 1))
    for k, z in enumerate(data.numbers):
        np.add.at(counts[k], z, 1.0)
    present = counts.sum(0) > 0
    solution, *_ = np.linalg.lstsq(counts[:, present], data.energies, rcond=None)
    refs = np.zeros(max_z + 1)
    refs[present] = solution
    return refs


def fit_scale_shift(data: Structures, refs: np.ndarray) -> tuple[float, float]:
    """shift = mean residual energy per atom; scale = RMS force component (the natural energy scale)."""
    residual = np.array([(e - refs[z].sum()) / len(z) for e, z in zip(data.energies, data.numbers)])
    forces = np.concatenate(data.forces)
    return float(np.sqrt(np.mean(forces**2))), float(residual.mean())
