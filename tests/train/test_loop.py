"""Distillation: the loss falls, metrics are stored in the checkpoint, runs resume, bad data is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploycc.checkpoint import load_checkpoint
from deploycc.data.schema import Structures, write_h5
from deploycc.errors import UserInputError
from deploycc.model import PRESET_CONFIGS
from deploycc.train.loop import TrainSettings, evaluate, train
from deploycc.train.normalisation import fit_element_references

from conftest import make_model, random_molecule


def labelled_dataset(path, count: int = 40, seed: int = 5) -> None:
    """Molecules labelled by a fixed random 'teacher' model, split by molecule id."""
    rng = np.random.default_rng(seed)
    teacher = make_model(seed=42, preset="ultra-tiny")
    numbers, positions, energies, forces = [], [], [], []
    for _ in range(count):
        z, r = random_molecule(rng, int(rng.integers(3, 9)))
        pos = torch.tensor(r[None], dtype=torch.float32, requires_grad=True)
        energy = teacher(torch.tensor(z[None]), pos)
        (grad,) = torch.autograd.grad(energy.sum(), pos)
        numbers.append(z)
        positions.append(r)
        energies.append(float(energy.detach()))
        forces.append(-grad[0].numpy().astype(np.float64))
    group = np.arange(count) // 2
    write_h5(Structures(numbers=numbers, positions=positions, energies=np.array(energies), forces=forces,
                        group=group, splits={"train": np.arange(0, 28), "val": np.arange(28, 34),
                                             "test": np.arange(34, 40)}), path)


def test_training_reduces_error_and_stores_metrics(tmp_path):
    data = tmp_path / "d.h5"
    labelled_dataset(data)
    settings = TrainSettings(epochs=6, batch_size=4, lr=3e-3, warmup_steps=5, patience=100)
    result = train(data, PRESET_CONFIGS["ultra-tiny"], tmp_path / "m.pt", settings)
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < first["loss"]
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    stored = checkpoint.metadata["test_metrics"]
    assert stored["force_rmse"] == pytest.approx(result.test.force_rmse)
    assert checkpoint.metadata["epochs"] == 6 and "torch" in checkpoint.metadata["library_versions"]
    from deploycc.data.schema import read_h5

    again = evaluate(checkpoint.model, read_h5(data).split("test"))
    assert again.force_rmse == pytest.approx(result.test.force_rmse, rel=1e-5)


def test_resume_continues_from_saved_state(tmp_path):
    data = tmp_path / "d.h5"
    labelled_dataset(data)
    out = tmp_path / "m.pt"
    short = TrainSettings(epochs=2, batch_size=8, warmup_steps=2, patience=100)
    train(data, PRESET_CONFIGS["ultra-tiny"], out, short)
    longer = TrainSettings(epochs=4, batch_size=8, warmup_steps=2, patience=100)
    resumed = train(data, PRESET_CONFIGS["ultra-tiny"], out, longer, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]


def test_element_references_fit_linear_energies():
    rng = np.random.default_rng(0)
    true_refs = {1: -13.6, 6: -1030.0, 8: -2040.0}
    numbers = [rng.choice([1, 6, 8], size=int(rng.integers(2, 9))) for _ in range(30)]
    energies = np.array([sum(true_refs[int(z)] for z in zs) for zs in numbers])
    data = Structures(numbers=numbers, positions=[np.zeros((len(z), 3)) for z in numbers], energies=energies,
                      forces=[np.zeros((len(z), 3)) for z in numbers])
    refs = fit_element_references(data, 100)
    for z, value in true_refs.items():
        assert refs[z] == pytest.approx(value, abs=1e-6)


def test_dataset_without_splits_or_with_unknown_elements_is_refused(tmp_path):
    data = tmp_path / "nosplit.h5"
    write_h5(Structures(numbers=[np.array([1, 1])], positions=[np.array([[0, 0, 0], [0.7, 0, 0.0]])],
                        energies=np.array([-1.0]), forces=[np.zeros((2, 3))]), data)
    with pytest.raises(UserInputError, match="empty 'train' split"):
        train(data, PRESET_CONFIGS["ultra-tiny"], tmp_path / "m.pt", TrainSettings(epochs=1))
    heavy = tmp_path / "heavy.h5"
    write_h5(Structures(numbers=[np.array([1, 110])] * 3, positions=[np.array([[0, 0, 0], [2.0, 0, 0]])] * 3,
                        energies=np.array([-1.0] * 3), forces=[np.zeros((2, 3))] * 3,
                        splits={"train": np.array([0]), "val": np.array([1]), "test": np.array([2])}), heavy)
    with pytest.raises(UserInputError, match="Z=110"):
        train(heavy, PRESET_CONFIGS["ultra-tiny"], tmp_path / "m.pt", TrainSettings(epochs=1))


def test_periodic_data_needs_a_periodic_model(tmp_path, periodic_calib_file):
    settings = TrainSettings(epochs=1, batch_size=2, warmup_steps=1)
    with pytest.raises(UserInputError, match="periodic model"):
        train(periodic_calib_file, PRESET_CONFIGS["tiny"], tmp_path / "m.pt", settings)


def test_periodic_model_trains_on_cells_slabs_and_clusters(tmp_path, periodic_calib_file):
    from dataclasses import replace

    config = replace(PRESET_CONFIGS["metals-tiny"], hidden_dim=16, num_rbf=6)
    settings = TrainSettings(epochs=4, batch_size=2, lr=3e-3, warmup_steps=2, patience=100)
    result = train(periodic_calib_file, config, tmp_path / "m.pt", settings)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert checkpoint.config.periodic and np.isfinite(checkpoint.metadata["test_metrics"]["force_rmse"])
