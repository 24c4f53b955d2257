"""torch.distributed helpers for torchrun, and an all-gather that keeps the gradient.

Without an initialised process group every helper is the single-process identity (rank 0 of 1), so training
code calls them unconditionally.

Loss scaling (why the global-batch gradient comes out exactly)
---------------------------------------------------------------
W ranks each hold b rows; the global batch has B = W*b rows and the single-process loss is
L = 1/B * sum_i l_i. Under DDP each rank r:

1. gathers the in-batch candidates with `all_gather_with_grad` (forward: concatenate in rank order; backward:
   all-reduce SUM of the incoming gradient, then keep this rank's slice), and
2. returns the *local mean* L_r = 1/b * sum_{i on r} l_i (`nce_loss(q_local, p_all, offset=rank()*b)`).

Backward on rank r then yields d(sum_r' L_r')/d x_r for its own inputs x_r: the all-reduce in step 1 adds the
gradient that the other ranks' losses send into x_r through the gathered copies. Since
sum_r' L_r' = W * L, that is W * dL/dx_r, and DDP's gradient *averaging* (divide by W) turns the parameter
gradients into exactly dL/dtheta, the single-process gradient of the global batch. The same holds for a term
computed on the fully gathered batch by every rank (e.g. the spread-out loss on all-gathered q and p):
each rank's copy contributes dS/dx_r, the all-reduce sums W of them, DDP divides by W.

So: use the local mean, do not multiply or divide by the world size, and wrap the model in DDP. (A backward
that only slices the gradient without the all-reduce would drop the cross-rank terms; one that all-reduces and
is then followed by DDP *summing* would be W times too large.) Ranks must hold equal batch sizes
(`DataLoader(drop_last=True)` with a `DistributedSampler`); `all_gather_with_grad` refuses unequal ones.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from gemma_embed.errors import InputError


def is_initialized() -> bool:
    """True inside an initialised torch.distributed process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank of this process; 0 without a process group."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of processes; 1 without a process group."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on rank 0, the process that logs and saves."""
    return rank() == 0


def setup() -> torch.device:
    """Join the process group that torchrun describes in the environment and return this process's device.

    NCCL with `cuda:LOCAL_RANK` when CUDA is available, gloo on CPU otherwise. With WORLD_SIZE unset or 1
    (plain `python train.py`) no group is created. Calling it again inside a group only returns the device.
    """
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return device


def teardown() -> None:
    """Leave the process group (a no-op without one).

    Ranks first wait for each other (bounded, so a rank that died cannot hang the others): gloo aborts a
    process whose peer destroys the group while it is still communicating.
    """
    if not is_initialized():
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=60))
        else:
            dist.barrier()
    finally:
        dist.destroy_process_group()


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = (rank() * x.shape[0], (rank() + 1) * x.shape[0])  # type: ignore[attr-defined]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start, stop = ctx.rows  # type: ignore[attr-defined]
        return grad[start:stop]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate `x` [n, ...] of every rank along dim 0 in rank order: [world_size * n, ...].

    Gradients flow back to each rank's own shard, summed over all ranks' uses (see the module docstring).
    Works for integer tensors (ids) too. The identity without a process group. Every rank must pass the same
    shape.
    """
    if world_size() == 1:
        return x
    shape = torch.tensor(x.shape, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(world_size())]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(s, shape) for s in shapes):
        raise InputError(
            f"all_gather_with_grad needs one shape on every rank; got {[tuple(s.tolist()) for s in shapes]}: "
            "use DataLoader(drop_last=True) so every rank has a full batch"
        )
    return _AllGatherWithGrad.apply(x)


# ---- collectives over ranks (identity in one process) --------------------------------------------------


def barrier() -> None:
    if is_initialized():
        dist.barrier()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writes a file), then the other ranks (which read it)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def all_ranks(obj: Any) -> list[Any]:
    """`obj` of every rank, in rank order."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean of each value over ranks (the values themselves in one process)."""
    if not is_initialized():
        return values
    keys = sorted(values)
    total = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return {k: float(v) / world_size() for k, v in zip(keys, total.tolist(), strict=True)}
