"""Message-block formulation switches: each must leave energies and forces unchanged."""

from __future__ import annotations

import collections

import pytest
import torch

from deploycc.model import PRESET_CONFIGS, StudentModel, energy_and_forces
from deploycc.model.layers import Message, columns_by_matmul
from deploycc.targets.onnx_export import trace_energy_forces


def _inputs(seed: int = 0, b: int = 2, n: int = 6, f: int = 16, k: int = 5):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, n, f, generator=g)
    centred = torch.randn(b, n, 3, generator=g)
    basis = torch.rand(k, b * n * n, generator=g)
    return s, centred, basis, basis / (1.0 + torch.rand(k, b * n * n, generator=g))


def test_skipping_the_zero_vector_message_changes_nothing() -> None:
    """With v = 0 the vector-vector message is zero, and so is its gradient: skipping it is exact."""
    torch.manual_seed(0)
    message = Message(16, 5).double()
    s, centred, basis, over = (x.double() for x in _inputs())
    basis.requires_grad_(True)
    v = torch.zeros(2, 6, 3, 16, dtype=torch.float64)
    outs = []
    for skip in (False, True):
        s_out, v_out = message(s, v, basis, over, centred, skip)
        (grad,) = torch.autograd.grad((s_out.sin().sum() + v_out.cos().sum()), basis)
        outs.append((s_out, v_out, grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_skipping_is_only_exact_for_zero_vectors() -> None:
    """The skip is not a no-op: with non-zero v the outputs differ (the flag really removes a term)."""
    torch.manual_seed(0)
    message = Message(16, 5)
    s, centred, basis, over = _inputs()
    v = torch.randn(2, 6, 3, 16)
    full = message(s, v, basis, over, centred, False)[1]
    skipped = message(s, v, basis, over, centred, True)[1]
    assert (full - skipped).abs().max() > 1e-3


def _matrix_products(model: StudentModel) -> int:
    graph = trace_energy_forces(model, "cpu").traced.graph
    targets = collections.Counter(str(node.target) for node in graph.nodes if node.op == "call_function")
    return sum(count for name, count in targets.items() if name in ("aten.mm.default", "aten.addmm.default",
                                                                    "aten.bmm.default"))


def test_columns_by_matmul_only_while_exporting() -> None:
    """Slices by default (no extra matrix products), constant selections inside the context; same results."""
    torch.manual_seed(0)
    model = StudentModel(PRESET_CONFIGS["tiny"]).eval()
    numbers = torch.tensor([[6, 1, 1, 8, 0], [7, 1, 1, 1, 1]])
    positions = torch.randn(2, 5, 3) * 1.2
    e_slice, f_slice = energy_and_forces(model, numbers, positions)
    sliced = _matrix_products(model)
    with columns_by_matmul(model):
        e_mm, f_mm = energy_and_forces(model, numbers, positions)
        selected = _matrix_products(model)
    assert not any(m.columns_by_matmul for m in model.messages)
    assert selected == sliced + 4 * len(model.messages)  # two selections forward, two backward, per interaction
    torch.testing.assert_close(e_mm, e_slice)
    torch.testing.assert_close(f_mm, f_slice)


def test_columns_by_matmul_restores_on_error_and_when_nested() -> None:
    model = StudentModel(PRESET_CONFIGS["ultra-tiny"])
    with pytest.raises(RuntimeError), columns_by_matmul(model):
        raise RuntimeError("export failed")
    assert not any(m.columns_by_matmul for m in model.messages)
    with columns_by_matmul(model):
        with columns_by_matmul(model):
            pass
        assert all(m.columns_by_matmul for m in model.messages)
    assert not any(m.columns_by_matmul for m in model.messages)
