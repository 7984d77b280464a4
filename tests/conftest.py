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


def make_periodic_model(seed: int = 0, preset: str = "metals-tiny") -> StudentModel:
    """A random periodic model with metal element references (so parity tests are sensitive)."""
    torch.manual_seed(seed)
    model = StudentModel(PRESET_CONFIGS[preset])
    with torch.no_grad():
        model.scale.fill_(0.5)
        model.element_ref[13], model.element_ref[29], model.element_ref[79] = -3.0, -3.5, -3.8
    return model.eval()


def periodic_structures(seed: int = 0) -> list:
    """Small periodic structures of every kind the method handles: cells narrower than twice the cutoff
    (27 and 125 lattice shifts), a triclinic cell, an alloy, a slab periodic in-plane only, a cluster."""
    from ase import Atoms
    from ase.build import bulk, fcc111

    rng = np.random.default_rng(seed)
    cu4 = bulk("Cu", "fcc", a=3.61, cubic=True)
    prim = bulk("Au", "fcc", a=4.08)
    tri = Atoms("AlCu", scaled_positions=[[0, 0, 0], [0.4, 0.55, 0.5]],
                cell=[[4.2, 0, 0], [1.3, 4.0, 0], [0.7, 0.9, 3.9]], pbc=True)
    alloy = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 2))
    alloy.numbers[rng.random(len(alloy)) < 0.4] = 79
    slab = fcc111("Al", size=(2, 2, 3), vacuum=4.0)
    slab.pbc = (True, True, False)
    cluster = Atoms("Cu13", positions=bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2).positions[:13])
    structures = [cu4, prim, tri, alloy, slab, cluster]
    for atoms in structures:
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
    return structures


@pytest.fixture(scope="session")
def periodic_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "metals-test.pt"
    save_checkpoint(make_periodic_model(), path, {"teacher": "none", "note": "random weights for tests"})
    return path


@pytest.fixture(scope="session")
def periodic_calib_file(tmp_path_factory) -> Path:
    """Periodic, slab and cluster structures labelled by another random periodic model."""
    from deploycc.data.schema import from_atoms
    from deploycc.periodic import pad_cells, periodic_inputs
    from deploycc.model import energy_and_forces
    from deploycc.batching import pad

    structures = periodic_structures(3)
    labeller = make_periodic_model(seed=99)
    for atoms in structures:
        z, r = pad([atoms.numbers], [atoms.positions])
        cell, pbc = pad_cells([atoms.cell.array], [atoms.pbc], 1, labeller.cutoff)
        energy, forces = energy_and_forces(labeller, *periodic_inputs(z, r, cell, pbc, labeller.cutoff))
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms.calc = SinglePointCalculator(atoms, energy=float(energy[0]), forces=forces[0].numpy().astype(np.float64))
    data = from_atoms(structures, group=np.arange(len(structures)), require_labels=True)
    data.splits = {"train": np.arange(4), "val": np.array([4]), "test": np.array([5])}
    path = tmp_path_factory.mktemp("calib") / "metals.h5"
    write_h5(data, path)
    return path
