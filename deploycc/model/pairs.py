"""Neighbour-slot operations of the padded neighbour layout, with adjoints that gather instead of scatter.

Layout (see deploycc/model/student.py): atom i has M slots; slot (i, m) holds neighbour `neighbours[i, m]`
(padding slots hold i itself, with a pair vector longer than the cutoff, so they contribute exactly zero)
and `reverse[i, m]`, the flat index (j * M + m') of the slot that holds i among j's neighbours (padding
slots point at themselves).  The list is full and symmetric, so the adjoint of gathering atom j's
features into i's slots is a gather along `reverse` followed by a sum over slots: no scatter-add, which
TensorRT lacks and which ONNX Runtime computed wrongly with several threads.

`filtered_contract(basis, x, weight, ...)` = sum_k weight[k, c] sum_m basis[i, m, k] x[neighbours[i, m], c]
is the only place where per-atom features meet per-slot geometry.  With `recompute` its backward gathers x
again instead of keeping the gathered [A, M, C] tensor alive between the forward and the backward pass:
inference memory then holds per-slot geometry only.  The recomputation gathers from x with a zero row appended, another
graph node than the forward gather, so graph optimisers do not merge the two (CSE) and undo the saving.
"""

from __future__ import annotations

import torch


def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of x [N, C] at index [A, M] -> [A, M, C]: one Gather over the flattened index."""
    # the Tensor method, not torch.index_select: torch_geometric (a SevenNet dependency) replaces that function
    # with a Python one TorchScript cannot compile, in any process that has imported it
    return x.index_select(0, index.reshape(-1)).reshape(index.shape[0], index.shape[1], x.shape[1])


def reverse_sum(per_slot: torch.Tensor, reverse: torch.Tensor) -> torch.Tensor:
    """sum over i's slots of the values stored in the reverse slots: [A, M, C] -> [A, C]."""
    a, m = reverse.shape[0], reverse.shape[1]
    return take(per_slot.reshape(a * m, per_slot.shape[2]), reverse).sum(1)


class _Gather(torch.autograd.Function):
    """x[neighbours] whose backward is the reverse-slot gather."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, neighbours: torch.Tensor, reverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(reverse)
        return take(x, neighbours)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (reverse,) = ctx.saved_tensors
        return reverse_sum(grad, reverse), None, None


def filtered_sum(basis: torch.Tensor, xj: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """sum_k weight[k, c] sum_m basis[i, m, k * G + g] xj[i, m, c] -> [B, G, C] (xj already gathered).
    The slot sums run in the basis' dtype (float16 for the mixed model), the filter in the weight's."""
    b, c = xj.shape[0], xj.shape[2]
    k = weight.shape[0]
    per_basis = torch.bmm(basis.transpose(1, 2), xj).to(weight.dtype).reshape(b, k, groups, c)
    return (per_basis * weight.reshape(1, k, 1, c)).sum(1)


class _FilteredContract(torch.autograd.Function):
    """The filtered neighbour contraction; keeps basis, x and the weights, recomputes the gathered x.

    With `block` > 0 (eager runs, never in a traced graph) the atoms are processed `block` at a time: each
    block's gathered features and per-basis sums stay in cache and below the allocator's mmap threshold (no
    page faults), and the backward accumulates the feature gradient with index_add (a scatter, which only
    exported graphs avoid).  (Narrowing each block to its widest real row was measured slower: the slices
    are copies.)"""

    @staticmethod
    def forward(ctx, basis: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, neighbours: torch.Tensor,
                reverse: torch.Tensor, groups: int, block: int) -> torch.Tensor:
        ctx.save_for_backward(basis, x, weight, neighbours, reverse)
        ctx.groups, ctx.block = groups, block
        a = neighbours.shape[0]
        if block <= 0 or block >= a:
            return filtered_sum(basis, take(x, neighbours), weight, groups)
        out = torch.empty(a, groups, x.shape[1], dtype=weight.dtype, device=x.device)
        for start in range(0, a, block):
            rows = slice(start, start + block)
            out[rows] = filtered_sum(basis[rows], take(x, neighbours[rows]), weight, groups)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        basis, x, weight, neighbours, reverse = ctx.saved_tensors
        a, block = neighbours.shape[0], ctx.block
        needs = ctx.needs_input_grad[:3]
        if 0 < block < a:
            grads = _blocked_backward(basis, x, weight, neighbours, grad, ctx.groups, block, needs)
        else:
            # Gathered from x with a zero row appended: the same values as the forward gather, but another
            # node, so that graph optimisers (CSE) do not merge the two and keep the forward's result alive.
            padded = torch.cat([x, torch.zeros_like(x[:1])], dim=0)
            grads = _backward_part(basis, padded, weight, neighbours, grad, ctx.groups, needs)
            if grads[1] is not None:
                grads = (grads[0], reverse_sum(grads[1], reverse), grads[2])
        return (*grads, None, None, None, None)


def _backward_part(basis: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, neighbours: torch.Tensor,
                   grad: torch.Tensor, groups: int, needs) -> tuple:
    """(grad basis [B, M, K*G], per-slot grad of the gathered x [B, M, C], grad weight [K, C]) of one block."""
    b, m, c = neighbours.shape[0], neighbours.shape[1], x.shape[1]
    k = weight.shape[0]
    xj = take(x, neighbours)
    grad_t = (weight.reshape(1, k, 1, c) * grad.unsqueeze(1)).reshape(b, k * groups, c).to(basis.dtype)
    grad_basis = torch.bmm(xj, grad_t.transpose(1, 2)) if needs[0] else None
    grad_xj = torch.bmm(basis, grad_t) if needs[1] else None
    grad_weight = None
    if needs[2]:
        per_basis = torch.bmm(basis.transpose(1, 2), xj).to(weight.dtype).reshape(b, k, groups, c)
        grad_weight = (per_basis * grad.unsqueeze(1)).sum((0, 2))
    return grad_basis, grad_xj, grad_weight


def _blocked_backward(basis, x, weight, neighbours, grad, groups: int, block: int, needs) -> tuple:
    """The filtered contraction's gradients, `block` atoms at a time (see _FilteredContract)."""
    grad_basis = torch.empty_like(basis) if needs[0] else None
    grad_x = torch.zeros_like(x) if needs[1] else None
    grad_weight = torch.zeros_like(weight) if needs[2] else None
    for start in range(0, neighbours.shape[0], block):
        rows = slice(start, start + block)
        part = neighbours[rows]
        g_basis, g_xj, g_weight = _backward_part(basis[rows], x, weight, part, grad[rows], groups, needs)
        if grad_basis is not None:
            grad_basis[rows] = g_basis
        if grad_x is not None:
            grad_x.index_add_(0, part.reshape(-1), g_xj.reshape(-1, x.shape[1]).to(x.dtype))
        if grad_weight is not None:
            grad_weight += g_weight
    return grad_basis, grad_x, grad_weight


def gather(x: torch.Tensor, neighbours: torch.Tensor, reverse: torch.Tensor, scatter_free: bool) -> torch.Tensor:
    """Neighbour features per slot [A, M, ...]; differentiable twice when not `scatter_free` (training)."""
    if scatter_free:
        return _Gather.apply(x, neighbours, reverse)
    return take(x, neighbours)


def filtered_contract(basis: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, neighbours: torch.Tensor,
                      reverse: torch.Tensor, groups: int = 1, recompute: bool = False, block: int = 0) -> torch.Tensor:
    """sum_k weight[k, c] sum_m basis[i, m, k * G + g] x[neighbours[i, m], c] -> [A, G, C]: a neighbour sum
    of the filter W_ij = weight . basis_ij times neighbour features, without forming W per slot.

    basis [A, M, K * G] (G = 3 for the directions basis, index k * 3 + xyz), x [A, C], weight [K, C].
    `recompute` (inference): scatter-free backward that recomputes the gathered features (in blocks of
    `block` atoms when > 0: eager only).  Otherwise plain autograd, which keeps the gathered features and
    differentiates twice (the force loss in training)."""
    if recompute:
        return _FilteredContract.apply(basis, x, weight, neighbours, reverse, groups, block)
    return filtered_sum(basis, take(x, neighbours), weight, groups)
