"""Message-block formulation switches and the scatter-free neighbour contractions: each must leave energies,
forces and their derivatives unchanged."""

from __future__ import annotations

import pytest
import torch

from deploycc.model.layers import Message
from deploycc.model.pairs import filtered_contract, gather, reverse_sum, take
from deploycc.runtime.neighbours import Structure, neighbour_batch
from deploycc.targets.base import GraphInputs
from helpers import periodic_structures, random_molecule

import numpy as np


def layout(seed: int = 0):
    """A real neighbour layout (a cluster and a small cell, so reverse slots include periodic images)."""
    rng = np.random.default_rng(seed)
    structures = [Structure.of(*random_molecule(rng, 9)), Structure.from_atoms(periodic_structures(seed)[0])]
    return GraphInputs.from_batch(neighbour_batch(structures, 5.0), torch.float64)


def _message_inputs(seed: int = 0, f: int = 16, k: int = 5):
    inputs = layout(seed)
    g = torch.Generator().manual_seed(seed)
    a, m = inputs.atoms, inputs.slots
    s = torch.randn(a, f, generator=g, dtype=torch.float64)
    basis = torch.rand(a, m, k, generator=g, dtype=torch.float64)
    directions = torch.randn(a, m, 3 * k, generator=g, dtype=torch.float64)
    return inputs, s, basis, directions


def test_skipping_the_zero_vector_message_changes_nothing() -> None:
    """With v = 0 the vector-vector message is zero, and so is its gradient: skipping it is exact."""
    torch.manual_seed(0)
    message = Message(16, 5).double()
    inputs, s, basis, directions = _message_inputs()
    basis.requires_grad_(True)
    v = torch.zeros(inputs.atoms, 3, 16, dtype=torch.float64)
    outs = []
    for skip in (False, True):
        s_out, v_out = message(s, v, basis, directions, inputs.neighbours, inputs.reverse, skip)
        (grad,) = torch.autograd.grad((s_out.sin().sum() + v_out.cos().sum()), basis)
        outs.append((s_out, v_out, grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_skipping_is_only_exact_for_zero_vectors() -> None:
    """The skip is not a no-op: with non-zero v the outputs differ (the flag really removes a term)."""
    torch.manual_seed(0)
    message = Message(16, 5).double()
    inputs, s, basis, directions = _message_inputs()
    v = torch.randn(inputs.atoms, 3, 16, dtype=torch.float64)
    full = message(s, v, basis, directions, inputs.neighbours, inputs.reverse, False)[1]
    skipped = message(s, v, basis, directions, inputs.neighbours, inputs.reverse, True)[1]
    assert (full - skipped).abs().max() > 1e-3


def test_reverse_slots_are_an_involution_pointing_back() -> None:
    """reverse[reverse[s]] = s; the slot reverse[i, m] belongs to j = neighbours[i, m] and holds i."""
    inputs = layout(1)
    a, m = inputs.atoms, inputs.slots
    flat = inputs.reverse.reshape(-1)
    assert torch.equal(flat[flat], torch.arange(a * m))
    owner = torch.arange(a).repeat_interleave(m)
    real = inputs.vectors.reshape(-1, 3).norm(dim=1) < 50.0
    assert torch.equal(owner[flat][real], inputs.neighbours.reshape(-1)[real])
    assert torch.equal(inputs.neighbours.reshape(-1)[flat][real], owner[real])
    torch.testing.assert_close(inputs.vectors.reshape(-1, 3)[flat][real], -inputs.vectors.reshape(-1, 3)[real])


@pytest.mark.parametrize("width", [1, 7])
def test_scatter_free_gather_has_the_exact_adjoint(width: int) -> None:
    """The reverse-slot gather is the adjoint of the neighbour gather: <gather(x), y> = <x, adjoint(y)>, and
    it equals autograd's scatter-add gradient."""
    inputs = layout(2)
    g = torch.Generator().manual_seed(width)
    x = torch.randn(inputs.atoms, width, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(inputs.atoms, inputs.slots, width, generator=g, dtype=torch.float64)
    real = (inputs.vectors.norm(dim=-1) < 50.0).unsqueeze(-1)  # padding slots carry no gradient
    y = y * real
    (plain,) = torch.autograd.grad((take(x, inputs.neighbours) * y).sum(), x)
    (free,) = torch.autograd.grad((gather(x, inputs.neighbours, inputs.reverse, True) * y).sum(), x)
    torch.testing.assert_close(free, plain, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(reverse_sum(y, inputs.reverse), plain, rtol=1e-12, atol=1e-12)
    assert plain.abs().max() > 1e-3


@pytest.mark.parametrize("groups,block", [(1, 0), (3, 0), (1, 5), (3, 7), (3, 1000)])
def test_recomputing_contraction_equals_plain_autograd(groups: int, block: int) -> None:
    """The recomputing contraction (whole or in blocks of atoms) equals plain autograd's in value and in its
    gradients with respect to the basis, the features and the filter weights."""
    inputs = layout(3)
    g = torch.Generator().manual_seed(3)
    real = (inputs.vectors.norm(dim=-1) < 50.0).unsqueeze(-1).double()
    basis = (torch.rand(inputs.atoms, inputs.slots, 4 * groups, generator=g, dtype=torch.float64) * real)
    basis.requires_grad_(True)
    x = torch.randn(inputs.atoms, 6, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(inputs.atoms, groups, 6, generator=g, dtype=torch.float64)
    results = []
    for recompute in (False, True):
        out = filtered_contract(basis, x, weight, inputs.neighbours, inputs.reverse, groups, recompute, block)
        grads = torch.autograd.grad((out * probe).sum(), [basis, x, weight])
        results.append((out, *grads))
    for plain, recomputed in zip(*results):
        torch.testing.assert_close(recomputed, plain, rtol=1e-12, atol=1e-12)
    assert all(r.abs().max() > 1e-3 for r in results[0])


def test_contraction_is_the_filtered_neighbour_sum() -> None:
    """filtered_contract = sum_j (weight . basis_ij) x_j, written out slot by slot."""
    inputs = layout(4)
    g = torch.Generator().manual_seed(4)
    basis = torch.rand(inputs.atoms, inputs.slots, 3, generator=g, dtype=torch.float64)
    x = torch.randn(inputs.atoms, 2, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 2, generator=g, dtype=torch.float64)
    out = filtered_contract(basis, x, weight, inputs.neighbours, inputs.reverse)
    expected = torch.zeros(inputs.atoms, 2, dtype=torch.float64)
    for i in range(inputs.atoms):
        for m in range(inputs.slots):
            expected[i] += (basis[i, m] @ weight) * x[inputs.neighbours[i, m]]
    torch.testing.assert_close(out[:, 0], expected, rtol=1e-12, atol=1e-12)


def test_the_model_scripts_when_torch_index_select_is_replaced(monkeypatch):
    # torch_geometric (a SevenNet dependency) replaces torch.index_select and torch.select with Python functions
    # TorchScript cannot compile; a process that loaded the SevenNet teacher must still build TorchScript
    import torch

    from deploycc.model import PRESET_CONFIGS, StudentModel

    def replaced(input, dim, index, *, out=None):  # untyped, as torch_geometric's: not scriptable
        return input.index_select(dim if isinstance(dim, int) else 0, index)

    monkeypatch.setattr(torch, "index_select", replaced)
    monkeypatch.setattr(torch, "select", replaced)
    scripted = torch.jit.script(StudentModel(PRESET_CONFIGS["ultra-tiny"]).eval())
    assert scripted is not None
