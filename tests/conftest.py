"""Shared fixtures: small random-weights checkpoints and calibration files, built in code."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py for test modules in subfolders

from deploycc.checkpoint import save_checkpoint  # noqa: E402
from deploycc.data.schema import Structures, from_atoms, write_h5  # noqa: E402
from helpers import evaluate, make_model, make_periodic_model, periodic_structures, random_molecule  # noqa: E402

torch.set_num_threads(1)


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
    labels = evaluate(make_model(seed=99), mols, torch.float32)
    data = Structures(numbers=[m[0] for m in mols], positions=[m[1] for m in mols], energies=labels.energies,
                      forces=[labels.forces_of(k) for k in range(len(mols))], group=np.arange(len(mols)),
                      splits={"train": np.arange(8), "val": np.arange(8, 10), "test": np.arange(10, 12)})
    path = tmp_path_factory.mktemp("calib") / "calib.h5"
    write_h5(data, path)
    return path


@pytest.fixture(scope="session")
def periodic_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "metals-test.pt"
    save_checkpoint(make_periodic_model(), path, {"teacher": "none", "note": "random weights for tests"})
    return path


@pytest.fixture(scope="session")
def periodic_calib_file(tmp_path_factory) -> Path:
    """Periodic, slab and cluster structures labelled by another random periodic model."""
    from ase.calculators.singlepoint import SinglePointCalculator

    structures = periodic_structures(3)
    labels = evaluate(make_periodic_model(seed=99), structures, torch.float32)
    for k, atoms in enumerate(structures):
        atoms.calc = SinglePointCalculator(atoms, energy=float(labels.energies[k]), forces=labels.forces_of(k))
    data = from_atoms(structures, group=np.arange(len(structures)), require_labels=True)
    data.splits = {"train": np.arange(4), "val": np.array([4]), "test": np.array([5])}
    path = tmp_path_factory.mktemp("calib") / "metals.h5"
    write_h5(data, path)
    return path


@pytest.fixture
def cli(monkeypatch, capsys):
    """`deploycc ARGS` in this process (faults can be monkeypatched in): returns (exit code, stdout, stderr)."""
    from deploycc.cli import main

    def run(*args, cwd: Path | None = None) -> tuple[int, str, str]:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["deploycc", *map(str, args)])
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
