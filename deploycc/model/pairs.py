"""Neighbour-slot operations of the padded neighbour layout, with adjoints that gather instead of scatter.

Layout (see deploycc/model/student.py): atom i has M slots; slot (i, m) holds neighbour `neighbours[i, m]`
(padding slots hold i itself, with a pair vector longer than the cutoff, so they contribute exactly zero)
and `reverse[i, m]`, the flat index (j * M + m') of the slot that holds i among j's neighbours (padding
slots point at themselves).  The list is full and symmetric, so the adjoint of gathering atom j's
features into i's slots is a gather along `reverse` followed by a sum over slots: no scatter-add, which
TensorRT lacks and which ONNX Runtime computed wrongly with several threads.

`contract(basis, x, ...)` = sum_m basis[i, m, k] x[neighbours[i, m], c] -> [A, K, C] is the only place
where per-atom features meet per-slot geometry.  With `recompute` its backward gathers x again instead of
keeping the gathered [A, M, C] tensor alive between the forward and the backward pass: inference memory
then holds per-slot geometry only.  The recomputation gathers from x with a zero row appended, another
graph node than the forward gather, so graph optimisers do not merge the two (CSE) and undo the saving.
"""

from __future__ import annotations

import torch


def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of x [N, C] at index [A, M] -> [A, M, C]: one Gather over the flattened index."""
    return torch.index_select(x, 0, index.reshape(-1)).reshape(index.shape[0], index.shape[1], x.shape[1])


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


class _Contract(torch.autograd.Function):
    """sum_m basis[i, m, k] x[neighbours[i, m], c]; keeps basis and x, recomputes the gathered x.

    With `block` > 0 (eager runs, never in a traced graph) the atoms are processed `block` at a time: each
    gathered block stays in cache and below the allocator's mmap threshold (no page faults), and the
    backward accumulates the feature gradient with index_add (a scatter, which only exported graphs avoid)."""

    @staticmethod
    def forward(ctx, basis: torch.Tensor, x: torch.Tensor, neighbours: torch.Tensor, reverse: torch.Tensor,
                block: int = 0) -> torch.Tensor:
        ctx.save_for_backward(basis, x, neighbours, reverse)
        ctx.block = block
        a = neighbours.shape[0]
        if block <= 0 or block >= a:
            return torch.bmm(basis.transpose(1, 2), take(x, neighbours))
        out = torch.empty(a, basis.shape[2], x.shape[1], dtype=x.dtype, device=x.device)
        for start in range(0, a, block):
            part = slice(start, start + block)
            torch.bmm(basis[part].transpose(1, 2), take(x, neighbours[part]), out=out[part])
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        basis, x, neighbours, reverse = ctx.saved_tensors
        a, m = neighbours.shape
        if 0 < ctx.block < a:
            return (*_blocked_backward(basis, x, neighbours, grad, ctx.block, ctx.needs_input_grad), None, None, None)
        grad_basis = None
        if ctx.needs_input_grad[0]:
            # Gathered from x with a zero row appended: the same values as the forward gather, but another
            # node, so that graph optimisers (CSE) do not merge the two and keep the forward's result alive.
            padded = torch.cat([x, torch.zeros_like(x[:1])], dim=0)
            grad_basis = torch.bmm(take(padded, neighbours), grad.transpose(1, 2))
        grad_x = reverse_sum(torch.bmm(basis, grad), reverse) if ctx.needs_input_grad[1] else None
        return grad_basis, grad_x, None, None, None


def _blocked_backward(basis: torch.Tensor, x: torch.Tensor, neighbours: torch.Tensor, grad: torch.Tensor,
                      block: int, needs: tuple[bool, ...]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The contraction's gradients, `block` atoms at a time."""
    grad_basis = torch.empty_like(basis) if needs[0] else None
    grad_x = torch.zeros_like(x) if needs[1] else None
    for start in range(0, neighbours.shape[0], block):
        part = slice(start, start + block)
        if grad_basis is not None:
            torch.bmm(take(x, neighbours[part]), grad[part].transpose(1, 2), out=grad_basis[part])
        if grad_x is not None:
            per_slot = torch.bmm(basis[part], grad[part])
            grad_x.index_add_(0, neighbours[part].reshape(-1), per_slot.reshape(-1, x.shape[1]))
    return grad_basis, grad_x


def gather(x: torch.Tensor, neighbours: torch.Tensor, reverse: torch.Tensor, scatter_free: bool) -> torch.Tensor:
    """Neighbour features per slot [A, M, ...]; differentiable twice when not `scatter_free` (training)."""
    if scatter_free:
        return _Gather.apply(x, neighbours, reverse)
    return take(x, neighbours)


def contract(basis: torch.Tensor, x: torch.Tensor, neighbours: torch.Tensor, reverse: torch.Tensor,
             recompute: bool, block: int = 0) -> torch.Tensor:
    """[A, M, K] slot weights times neighbour features [A, C] summed over slots -> [A, K, C].

    `recompute` (inference): scatter-free backward that recomputes the gathered features (in blocks of
    `block` atoms when > 0: eager only).  Otherwise plain autograd, which keeps the gathered features and
    differentiates twice (the force loss in training)."""
    if recompute:
        return _Contract.apply(basis, x, neighbours, reverse, block)
    return torch.bmm(basis.transpose(1, 2), take(x, neighbours))
