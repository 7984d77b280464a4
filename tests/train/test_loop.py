"""Distillation: the loss falls, metrics are stored in the checkpoint, runs resume, settings and bad data
are refused in one line, periodic data trains with any preset."""

from __future__ import annotations

import math
from dataclasses import replace
import numpy as np
import pytest
import torch

import deploycc.train.batches
from deploycc.checkpoint import load_checkpoint
from deploycc.data.schema import Structures, read_h5, write_h5
from deploycc.errors import UserInputError
from deploycc.model import PRESET_CONFIGS
from deploycc.train.loop import TrainSettings, evaluate, initial_model, retarget_references, train
from deploycc.train.normalisation import fit_element_references, fit_scale_shift

from train_data import write_labelled

ULTRA = PRESET_CONFIGS["ultra-tiny"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_labelled(tmp_path_factory.mktemp("train") / "d.h5")


def test_training_reduces_error_and_stores_metrics(dataset, tmp_path):
    settings = TrainSettings(epochs=6, batch_size=4, lr=3e-3, warmup_steps=5, patience=100)
    epochs: list[dict] = []
    result = train(dataset, ULTRA, tmp_path / "m.pt", settings, on_epoch=epochs.append)
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < first["loss"]
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5, 6] and epochs == result.history
    assert result.epochs_run == 6 and result.checkpoint == tmp_path / "m.pt"
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    stored = checkpoint.metadata["test_metrics"]
    assert stored["force_rmse"] == pytest.approx(result.test.force_rmse)
    assert stored["structures"] == 6 and checkpoint.metadata["val_metrics"]["structures"] == 6
    assert checkpoint.metadata["epochs"] == 6 and "torch" in checkpoint.metadata["library_versions"]
    assert checkpoint.metadata["train_settings"]["batch_size"] == 4
    data = read_h5(dataset)
    train_elements = sorted({int(z) for i in data.splits["train"] for z in data.numbers[i]})
    assert checkpoint.metadata["elements"] == train_elements
    again = evaluate(checkpoint.model, data.split("test"))
    assert again.force_rmse == pytest.approx(result.test.force_rmse, rel=1e-5)
    assert again.energy_mae_per_atom == pytest.approx(result.test.energy_mae_per_atom, rel=1e-5, abs=1e-9)


def test_neighbour_lists_are_built_once_per_split_not_per_epoch(dataset, tmp_path, monkeypatch):
    calls = []
    original = deploycc.train.batches.half_list
    monkeypatch.setattr(deploycc.train.batches, "half_list", lambda s, c: calls.append(len(s)) or original(s, c))
    train(dataset, ULTRA, tmp_path / "m.pt", TrainSettings(epochs=3, batch_size=8, warmup_steps=2, patience=100))
    assert len(calls) == 28 + 6 + 6  # train, val, test: once each, whatever the number of epochs


def test_resume_continues_from_saved_state(dataset, tmp_path):
    out = tmp_path / "m.pt"
    short = TrainSettings(epochs=2, batch_size=8, warmup_steps=2, patience=100)
    first = train(dataset, ULTRA, out, short)
    assert out.with_name(out.name + ".state").is_file()
    longer = TrainSettings(epochs=4, batch_size=8, warmup_steps=2, patience=100)
    resumed = train(dataset, ULTRA, out, longer, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[:2] == first.history  # the first two epochs are the saved ones, not rerun


def test_time_limit_stops_after_the_first_epoch(dataset, tmp_path):
    settings = TrainSettings(epochs=50, batch_size=8, warmup_steps=2, max_minutes=1e-9)
    result = train(dataset, ULTRA, tmp_path / "m.pt", settings)
    assert result.epochs_run == 1 and len(result.history) == 1


def test_element_references_fit_linear_energies():
    rng = np.random.default_rng(0)
    true_refs = {1: -13.6, 6: -1030.0, 8: -2040.0}
    numbers = [rng.choice([1, 6, 8], size=int(rng.integers(2, 9))) for _ in range(30)]
    energies = np.array([sum(true_refs[int(z)] for z in zs) for zs in numbers])
    forces = [rng.normal(0.0, 0.5, (len(z), 3)) for z in numbers]
    data = Structures(numbers=numbers, positions=[np.zeros((len(z), 3)) for z in numbers], energies=energies,
                      forces=forces)
    refs = fit_element_references(data, 100)
    for z, value in true_refs.items():
        assert refs[z] == pytest.approx(value, abs=1e-6)
    assert refs[7] == 0.0 and refs.shape == (101,)
    scale, shift = fit_scale_shift(data, refs)
    assert shift == pytest.approx(0.0, abs=1e-6)
    assert scale == pytest.approx(float(np.sqrt(np.mean(np.concatenate(forces) ** 2))))


def test_a_student_retargeted_to_another_teacher_moves_only_its_element_references(dataset):
    import copy

    data = read_h5(dataset)
    torch.manual_seed(0)
    model = initial_model(ULTRA, data, "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    offsets = {1: 3.0, 6: -40.0, 7: 11.0, 8: -250.0}  # another teacher: other atomic energies, the same forces
    shifted = np.array([e + sum(offsets.get(int(z), 0.0) for z in zs) for e, zs in zip(data.energies, data.numbers)])
    other = Structures(numbers=data.numbers, positions=data.positions, energies=shifted, forces=data.forces,
                       cells=data.cells, pbc=data.pbc)
    error = evaluate(model, data).energy_mae_per_atom
    assert evaluate(model, other).energy_mae_per_atom > 100 * error  # the first teacher's references are off
    same = retarget_references(copy.deepcopy(model), data, "cpu")
    moved = retarget_references(model, other, "cpu")
    shift = (moved.element_ref - same.element_ref).double().numpy()
    for z in range(len(shift)):
        assert shift[z] == pytest.approx(offsets.get(z, 0.0), abs=2e-3)  # unseen elements (here 9...) stay put
    # on its own teacher the student's energies are used, row by row: its references barely move, no worse fit
    assert np.abs((same.element_ref - before["element_ref"]).numpy()).max() < 0.05
    assert evaluate(same, data).energy_mae_per_atom <= 1.05 * error
    assert evaluate(moved, other).energy_mae_per_atom == pytest.approx(evaluate(same, data).energy_mae_per_atom,
                                                                       rel=1e-3, abs=1e-4)  # float32 references
    after = moved.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k != "element_ref")


@pytest.mark.parametrize("change, fragment", [
    ({"batch_size": 0}, "--batch-size must be at least 1, got 0"), ({"epochs": 0}, "--epochs must be at least 1"),
    ({"patience": 0}, "--patience"), ({"lr": 0.0}, "--lr must be a positive number, got 0.0"),
    ({"lr": -1e-3}, "--lr must be a positive number"),
    ({"lr": float("nan")}, "--lr must be a positive number, got nan"),
    ({"lr": float("inf")}, "--lr"), ({"ema_decay": 0.0}, "--ema-decay"),
    ({"force_weight": -1.0}, "--force-weight must be a non-negative number"),
    ({"energy_weight": float("nan")}, "--energy-weight"), ({"max_minutes": -1.0}, "--max-minutes"),
])
def test_settings_outside_their_domain_are_refused_in_one_line(change, fragment, tmp_path):
    TrainSettings().check()
    with pytest.raises(UserInputError) as caught:
        TrainSettings(**change).check()
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(UserInputError, match=fragment.split(" ")[0]):  # before the data is even read
        train(tmp_path / "missing.h5", ULTRA, tmp_path / "m.pt", TrainSettings(**change))
    assert not (tmp_path / "m.pt").exists()


def test_dataset_without_labels_splits_or_with_unknown_elements_is_refused(tmp_path):
    h2 = dict(numbers=[np.array([1, 1])] * 3, positions=[np.array([[0, 0, 0], [0.7, 0, 0.0]])] * 3)
    splits = {"train": np.array([0]), "val": np.array([1]), "test": np.array([2])}
    unlabelled = tmp_path / "unlabelled.h5"
    write_h5(Structures(**h2, splits=splits), unlabelled)
    with pytest.raises(UserInputError, match="no energy/force labels"):
        train(unlabelled, ULTRA, tmp_path / "m.pt", TrainSettings(epochs=1))
    nosplit = tmp_path / "nosplit.h5"
    write_h5(Structures(**h2, energies=np.array([-1.0] * 3), forces=[np.zeros((2, 3))] * 3), nosplit)
    with pytest.raises(UserInputError, match="empty 'train' split"):
        train(nosplit, ULTRA, tmp_path / "m.pt", TrainSettings(epochs=1))
    heavy = tmp_path / "heavy.h5"
    write_h5(Structures(numbers=[np.array([1, 110])] * 3, positions=[np.array([[0, 0, 0], [2.0, 0, 0]])] * 3,
                        energies=np.array([-1.0] * 3), forces=[np.zeros((2, 3))] * 3, splits=splits), heavy)
    with pytest.raises(UserInputError, match="Z=110"):
        train(heavy, ULTRA, tmp_path / "m.pt", TrainSettings(epochs=1))
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("preset", sorted(PRESET_CONFIGS))
def test_periodic_data_trains_with_any_preset(preset, tmp_path, periodic_calib_file):
    """Periodic images are ordinary neighbour slots: any preset trains on cells, slabs and clusters (the
    checkpoint records the model as periodic, so parity defaults to the periodic calibration set)."""
    config = PRESET_CONFIGS[preset]
    settings = TrainSettings(epochs=3, batch_size=2, lr=3e-3, warmup_steps=2, patience=100)
    result = train(periodic_calib_file, config, tmp_path / "m.pt", settings)
    assert all(math.isfinite(h["loss"]) for h in result.history)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert checkpoint.config.periodic
    assert replace(checkpoint.config, periodic=False) == replace(config, periodic=False)  # only that changed
    assert np.isfinite(checkpoint.metadata["test_metrics"]["force_rmse"])
    assert set(checkpoint.metadata["elements"]) <= {13, 29, 79} and checkpoint.metadata["elements"]


def test_init_starts_from_the_checkpoint_and_refuses_another_architecture_or_new_elements(dataset, tmp_path):
    first = train(dataset, ULTRA, tmp_path / "first.pt", TrainSettings(epochs=4, batch_size=4, lr=3e-3, warmup_steps=5))
    frozen = TrainSettings(epochs=1, batch_size=4, lr=1e-12, warmup_steps=1, seed=7)  # the weights cannot move
    warm = train(dataset, ULTRA, tmp_path / "warm.pt", replace(frozen, init=str(tmp_path / "first.pt")))
    cold = train(dataset, ULTRA, tmp_path / "cold.pt", frozen)
    start = load_checkpoint(tmp_path / "first.pt").model.state_dict()
    for name, value in load_checkpoint(tmp_path / "warm.pt").model.state_dict().items():
        torch.testing.assert_close(value, start[name], rtol=0, atol=1e-6)
    assert warm.test.force_rmse == pytest.approx(first.test.force_rmse, rel=1e-4)
    cold_state = load_checkpoint(tmp_path / "cold.pt").model.state_dict()
    assert max(float((cold_state[name] - start[name]).abs().max()) for name in start) > 1e-2  # not equal by chance
    assert cold.test.force_rmse != pytest.approx(warm.test.force_rmse, rel=1e-4)
    assert load_checkpoint(tmp_path / "warm.pt").metadata["train_settings"]["init"] == str(tmp_path / "first.pt")
    assert load_checkpoint(tmp_path / "warm.pt").metadata["init_sha256"] == first.sha256
    assert "init_sha256" not in load_checkpoint(tmp_path / "cold.pt").metadata
    with pytest.raises(UserInputError, match="--init .* not the"):
        train(dataset, PRESET_CONFIGS["tiny"], tmp_path / "x.pt", replace(frozen, init=str(tmp_path / "first.pt")))
    data = read_h5(dataset)
    data.numbers[int(data.splits["train"][0])][0] = 16  # sulphur: never in the first run's training split
    write_h5(data, tmp_path / "with-s.h5")
    with pytest.raises(UserInputError, match=r"never trained on element\(s\) Z=\[16\]"):
        train(tmp_path / "with-s.h5", ULTRA, tmp_path / "x.pt", replace(frozen, init=str(tmp_path / "first.pt")))


def test_a_molecular_checkpoint_warm_started_on_periodic_data_is_marked_periodic(tmp_path):
    from deploycc.checkpoint import save_checkpoint
    from deploycc.train.loop import warm_start

    molecular = initial_model(ULTRA, read_h5(write_labelled(tmp_path / "d.h5")), "cpu")
    save_checkpoint(molecular, tmp_path / "mol.pt", {"teacher": "test"})
    started = warm_start(str(tmp_path / "mol.pt"), replace(ULTRA, periodic=True), "cpu").model
    assert started.config.periodic and not ULTRA.periodic
    saved = molecular.state_dict()
    assert all(torch.equal(value, saved[name]) for name, value in started.state_dict().items())
    with pytest.raises(UserInputError, match="--init"):
        warm_start(str(tmp_path / "mol.pt"), replace(PRESET_CONFIGS["tiny"], periodic=True), "cpu")
