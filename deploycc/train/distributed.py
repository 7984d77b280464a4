"""Data-parallel training under `torchrun` (docs/distributed-training.md).

A launcher that sets WORLD_SIZE > 1 (with RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT) makes `train()`
join a process group: gloo on CPU, NCCL on `cuda:LOCAL_RANK`.  Every rank builds the same shuffled list of
*global* batches of W x batch_size structures (the batches a single process with that batch size would
draw) and takes its slice of each.  Each rank's loss is normalised by the global batch (its squared errors
summed, divided by the global structure and force-component counts), so the gradients summed across ranks,
and the partial losses summed, are exactly those of the single-process loss on the global batch.  Gradients
are summed by hand, in one flat all-reduce per step that also carries the loss and rank 0's clock, rather
than by DistributedDataParallel: DDP averages, needs every rank to run a backward every step (a short last
batch may leave a rank with nothing), and with `static_graph=True` it gave wrong gradients for the double
backward of the force loss (torch 2.13).  Outside a launcher nothing here is used.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

from ..data.schema import Structures
from ..model import StudentModel
from .batches import Metrics, Prepared, distillation_loss, evaluate, predict_batch, size_batches

__all__ = ["Context", "session", "is_main_process", "shard_gradients", "evaluate_reduced", "sync_model",
           "read_on_main", "agree", "share"]


@dataclass(frozen=True)
class Context:
    """This process's place in the run: rank, world size and the device it computes on."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"
    owned: bool = False  # this process created the group, so it destroys it

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def launched() -> bool:
    """True when a launcher (torchrun) runs this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """True unless a launcher made this process a rank other than 0 (for printing only once)."""
    return int(os.environ.get("RANK", "0")) == 0


def _join(device: str) -> Context:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(device=device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend, device_id = "gloo", None
    if device.startswith("cuda"):
        device, backend, device_id = f"cuda:{local}", "nccl", torch.device("cuda", local)
        torch.cuda.set_device(local)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend=backend, device_id=device_id)
    return Context(rank, world, device, owned)


@contextmanager
def session(device: str) -> Iterator[Context]:
    """The run's context; joins (and finally destroys, also on error) the process group under a launcher."""
    ctx = _join(device)
    try:
        yield ctx
        if ctx.owned and dist.is_initialized():
            # Every rank leaves together: a gloo group torn down while a peer still holds its connections can
            # abort the process at exit ("terminate called without an active exception").
            dist.barrier()
    finally:
        if ctx.owned and dist.is_initialized():
            dist.destroy_process_group()


def sync_model(model: StudentModel, ctx: Context) -> None:
    """Give every rank rank 0's parameters and buffers (they agree already when seeded alike)."""
    if ctx.active:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, 0)


def shard_gradients(model: StudentModel, prepared: Prepared, idx: np.ndarray, weights: tuple[float, float, float],
                    ctx: Context, clock: float) -> tuple[float, float]:
    """Backward this rank's slice of the global batch `idx`, then sum gradients across ranks.

    Returns the global batch's loss and rank 0's `clock` (seconds; so that time-based schedules agree)."""
    mine = np.array_split(idx, ctx.world)[ctx.rank]
    sizes = prepared.sizes()
    params = [p for p in model.parameters() if p.requires_grad]
    loss = torch.zeros((), device=ctx.device)
    if len(mine):
        value = distillation_loss(model, prepared.batch(mine, ctx.device), len(mine), *weights,
                                  structures=len(idx), atoms=int(sum(sizes[i] for i in idx)))
        value.backward()
        loss = value.detach()
    dtype = params[0].dtype
    has = [float(p.grad is not None) for p in params]
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype) for p in params]
    extra = torch.tensor([*has, clock if ctx.is_main else 0.0], dtype=dtype, device=ctx.device)
    flat = torch.cat([*grads, loss.reshape(1).to(dtype), extra])  # gradients, loss, reached flags, clock
    total = sum(g.numel() for g in grads)
    dist.all_reduce(flat)
    reached, offset = flat[total + 1 : total + 1 + len(params)].tolist(), 0
    for p, seen in zip(params, reached):  # a parameter no rank reached keeps grad None, as in one process
        if seen > 0:
            p.grad = flat[offset : offset + p.numel()].view_as(p).to(p.dtype).clone()
        offset += p.numel()
    return float(flat[total]), float(flat[-1])


def evaluate_reduced(model: StudentModel, data: Structures | Prepared, ctx: Context, batch_size: int = 64
                     ) -> Metrics:
    """`evaluate` with the structures shared out across ranks and the error sums added up."""
    if not ctx.active:
        return evaluate(model, data, ctx.device, batch_size)
    data = data if isinstance(data, Prepared) else Prepared.of(data, model.cutoff)
    mine = np.arange(len(data))[ctx.rank :: ctx.world]
    sums = torch.zeros(4, dtype=torch.float64, device=ctx.device)  # |dE|/atom, |dF|, dF^2, components
    sizes = data.sizes()
    for local in size_batches([sizes[i] for i in mine], batch_size):
        idx = mine[local]
        batch = data.batch(idx, ctx.device)
        energy, atoms, forces = predict_batch(model, batch, len(idx), create_graph=False)
        diff = (forces - batch[5]).double()
        sums += torch.stack([((energy.double() - batch[6]).abs() / atoms.double()).sum(), diff.abs().sum(),
                             (diff**2).sum(), torch.tensor(float(diff.numel()), device=ctx.device).double()])
    dist.all_reduce(sums)
    e_abs, f_abs, f_sq, n_comp = sums.tolist()
    return Metrics(e_abs / len(data), f_abs / n_comp, math.sqrt(f_sq / n_comp), len(data))


def share(value: object, ctx: Context) -> object:
    """Rank 0's `value`, on every rank."""
    if not ctx.active:
        return value
    box = [value if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(flag: bool, ctx: Context) -> bool:
    """Rank 0's decision, on every rank (early stopping and time limits must not split the ranks)."""
    return bool(share(bool(flag), ctx))


def read_on_main(path: Path, ctx: Context) -> bytes | None:
    """The bytes of `path` as rank 0 sees it (None when it has no such file), on every rank."""
    data = path.read_bytes() if ctx.is_main and path.is_file() else None
    return share(data, ctx)  # type: ignore[return-value]
