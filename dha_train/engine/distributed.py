"""Multi-process training with ``torch.distributed`` (launched by ``torchrun``).

What must agree across ranks and how it is kept so (see ``train_step`` and ``trainer``):

- network weights: every rank starts from the same seed; after each backward the gradients
  of the parameters that received one are averaged (``GradSync.mean_``), so every rank takes
  the same SGD step. This is data-parallel training as DDP does it, written as an explicit
  all-reduce because ``DistributedDataParallel`` fixes its parameter set at construction,
  while the supernet's scale affines become trainable when a unit freezes (ISTA-NAS), and
  because Eq. 4's separate batch uses ``torch.autograd.grad``, which DDP's reducer does not
  see;
- b (architecture) and eta (lr, wd): their gradients are averaged too (eta's hypergradient
  is linear in the averaged weight gradient), so the LASSO recovery, the support and the
  budget projection are identical on every rank;
- tau: Eq. 2 sums over the samples of the batch, so its gradients are summed across ranks;
- BatchNorm: batch statistics are per rank (as with plain DDP; PyTorch's SyncBatchNorm runs
  on GPUs only and is not an ``nn.BatchNorm2d``, which scale folding relies on); running
  statistics are averaged across ranks before every evaluation and checkpoint.

Each rank draws its augmentation pairs and magnitudes from its own generator, seeded from
``(seed, rank)``; after a resume, rank 0 continues its saved stream and the other ranks are
re-seeded from ``(seed, rank, step)`` (:func:`dha_train.engine.seeding.derive_seed`).
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "DistContext",
    "GradSync",
    "inside_torchrun",
    "setup",
    "teardown",
    "is_distributed",
    "all_reduce_",
    "broadcast_object",
    "sync_buffers_",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: str


def inside_torchrun() -> bool:
    """True in a process started by ``torchrun`` (it sets LOCAL_RANK)."""
    return "LOCAL_RANK" in os.environ


def setup(device: str, *, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group torchrun describes (env://): NCCL on CUDA with this process's
    GPU = LOCAL_RANK, gloo on CPU. Without torchrun: rank 0 of 1, nothing initialised."""
    if not inside_torchrun():
        return DistContext(0, 1, 0, device)
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=torch.device(device) if cuda else None,
        )
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device)
    log.info("rank %d of %d on %s", ctx.rank, ctx.world_size, ctx.device)
    return ctx


def teardown() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_(tensors: Sequence[Tensor], op: str = "mean") -> None:
    """In-place all-reduce of ``tensors`` (one coalesced buffer per dtype); ``op`` is
    ``"mean"``, ``"sum"`` or ``"max"``. Every rank must pass the same shapes in the same
    order. No-op in a single process."""
    if not tensors or not is_distributed():
        return
    reduce_op = dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    world = dist.get_world_size()
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat, op=reduce_op)
        if op == "mean":
            flat /= world
        offset = 0
        for t in group:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


class GradSync:
    """Averages (or sums) the ``.grad`` of the given parameters across ranks."""

    def mean_(self, params: Sequence[Tensor]) -> None:
        all_reduce_([p.grad for p in params if p.grad is not None], "mean")

    def sum_(self, params: Sequence[Tensor]) -> None:
        all_reduce_([p.grad for p in params if p.grad is not None], "sum")

    def mean_grads_(self, grads: Sequence[Tensor | None]) -> None:
        all_reduce_([g for g in grads if g is not None], "mean")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it (picklable objects; identity in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@torch.no_grad()
def sync_buffers_(module: nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm running statistics) across ranks."""
    all_reduce_([b for b in module.buffers() if b.is_floating_point()], "mean")
