"""Training batches on the neighbour layout: lists once per split, batches identical to the runtime's,
the distillation loss and the metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploycc.data.schema import from_atoms
from deploycc.runtime.neighbours import neighbour_batch, structures_of
from deploycc.targets.base import GraphInputs
from deploycc.train.batches import Prepared, distillation_loss, evaluate, predict_batch, size_batches

from helpers import evaluate as reference, make_model, make_periodic_model, periodic_structures
from train_data import labelled_molecules


@pytest.fixture(scope="module")
def data():
    return labelled_molecules(count=12, seed=3)


def test_size_batches_cover_every_index_once_and_group_similar_sizes():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 60, size=37)
    for shuffle in (None, np.random.default_rng(1)):
        batches = size_batches(sizes, 5, shuffle)
        assert sorted(np.concatenate(batches).tolist()) == list(range(37))
        assert [len(b) for b in sorted(batches, key=len, reverse=True)] == [5] * 7 + [2]
    plain = size_batches(sizes, 5)
    spans = [int(np.ptp(sizes[b])) for b in plain]
    assert max(spans) < np.ptp(sizes) / 2  # similar sizes share a batch
    assert np.all(np.diff([sizes[b].min() for b in plain]) >= 0)  # unshuffled: in size order
    a, b = size_batches(sizes, 5, np.random.default_rng(2)), size_batches(sizes, 5, np.random.default_rng(3))
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))  # the rng shuffles


@pytest.mark.parametrize("kind", ["molecules", "periodic"])
def test_prepared_batches_equal_the_runtime_layout(kind, data):
    if kind == "periodic":
        atoms = periodic_structures(1)
        labels = reference(make_periodic_model(seed=5), atoms, torch.float32)
        from ase.calculators.singlepoint import SinglePointCalculator

        for k, a in enumerate(atoms):
            a.calc = SinglePointCalculator(a, energy=float(labels.energies[k]), forces=labels.forces_of(k))
        data = from_atoms(atoms, require_labels=True)
    prepared = Prepared.of(data, 5.0)
    assert len(prepared) == len(data) and prepared.sizes() == [len(z) for z in data.numbers]
    idx = np.array([len(data) - 1, 0, 2])
    numbers, vectors, neighbours, reverse, system, forces, energies = prepared.batch(idx, "cpu")
    expected = GraphInputs.from_batch(neighbour_batch([structures_of(data)[i] for i in idx], 5.0))
    assert torch.equal(numbers, expected.numbers) and torch.equal(vectors, expected.vectors)
    assert torch.equal(neighbours, expected.neighbours) and torch.equal(reverse, expected.reverse)
    sizes = [len(data.numbers[i]) for i in idx]
    assert system.tolist() == np.repeat(np.arange(3), sizes).tolist()
    np.testing.assert_allclose(forces.numpy(), np.concatenate([data.forces[i] for i in idx]), rtol=1e-6)
    assert energies.dtype == torch.float64 and energies.tolist() == data.energies[idx].tolist()
    if kind == "periodic":
        assert neighbours.shape[1] > max(sizes)  # image slots: more neighbours than atoms in a cell


def test_predictions_and_metrics_match_the_reference_evaluation(data):
    model = make_model(seed=4, preset="ultra-tiny")
    prepared = Prepared.of(data, model.cutoff)
    idx = np.arange(len(data))
    energy, atoms, forces = predict_batch(model, prepared.batch(idx, "cpu"), len(idx), create_graph=False)
    expected = reference(model, list(zip(data.numbers, data.positions)), torch.float32)
    np.testing.assert_allclose(energy.double().numpy(), expected.energies, rtol=1e-6)
    np.testing.assert_allclose(forces.double().numpy(), expected.forces, atol=1e-4)
    assert atoms.tolist() == [float(len(z)) for z in data.numbers]
    metrics = evaluate(model, data, batch_size=5)
    sizes = np.array([len(z) for z in data.numbers])
    diff = expected.forces - np.concatenate(data.forces)
    assert metrics.structures == len(data)
    assert metrics.energy_mae_per_atom == pytest.approx(np.mean(np.abs(expected.energies - data.energies) / sizes),
                                                        rel=1e-4)
    assert metrics.force_mae == pytest.approx(np.mean(np.abs(diff)), rel=1e-4)
    assert metrics.force_rmse == pytest.approx(np.sqrt(np.mean(diff**2)), rel=1e-4)
    again = evaluate(model, prepared, batch_size=64)
    assert again.force_rmse == pytest.approx(metrics.force_rmse, rel=1e-6)


def test_distillation_loss_is_zero_on_the_model_own_labels_and_differentiable(data):
    model = make_model(seed=4, preset="ultra-tiny")
    own = labelled_molecules(count=12, seed=3)
    labels = reference(model, list(zip(own.numbers, own.positions)), torch.float32)
    own.energies, own.forces = labels.energies, [labels.forces_of(k) for k in range(len(own))]
    idx = np.arange(len(own))
    zero = distillation_loss(model, Prepared.of(own, model.cutoff).batch(idx, "cpu"), len(idx), 10.0, 1.0)
    assert zero.item() < 1e-6  # float32 rounding only
    loss = distillation_loss(model, Prepared.of(data, model.cutoff).batch(idx, "cpu"), len(idx), 10.0, 1.0, 0.5)
    assert loss.item() > 1e-3
    loss.backward()  # the force loss differentiates the forces again
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and any(float(g.abs().max()) > 0 for g in grads)
