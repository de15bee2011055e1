"""Batches per epoch (rank-sharded, resumable mid-epoch), plain evaluation, small helpers."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from .data import to_unit_float
from .distributed import all_reduce_
from .spaces.base import Selection, Supernet

__all__ = ["EpochBatches", "evaluate", "op_shares", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochBatches:
    """Index batches of one epoch: a permutation fixed by ``(seed, epoch)``, this rank's share.

    ``start`` skips batches already consumed (a resumed epoch sees exactly the remaining
    batches); ``limit`` caps the batches per epoch. The last incomplete batch is dropped so
    every step sees the same batch size (BatchNorm and the DA policy both prefer it).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        epoch: int,
        cfg: Any,
        *,
        start: int = 0,
        limit: int | None = None,
    ) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world = cfg.rank, cfg.world_size
        self.start, self.limit = start, limit

    def _total(self) -> int:
        per_rank = self.n // self.world
        total = max(1, per_rank // self.batch_size)
        return total if self.limit is None else min(total, self.limit)

    def __len__(self) -> int:
        return max(0, self._total() - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)[self.rank :: self.world].tolist()
        for b in range(self.start, self._total()):
            batch = perm[b * self.batch_size : (b + 1) * self.batch_size]
            if len(batch) < self.batch_size and b > 0:
                return
            yield batch


@torch.no_grad()
def evaluate(
    forward: Callable[[Tensor], Tensor],
    dataset: Dataset,
    *,
    batch_size: int,
    workers: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, float]:
    """Loss, top-1 and top-5 (percent, the project's one accuracy convention) of ``forward``
    (``[0, 1]`` images -> logits), no augmentation.

    With ``world_size > 1`` (every rank calls it) each rank evaluates every
    ``world_size``-th sample and the sums are all-reduced: the same figures as one process.
    """
    if world_size > 1:
        dataset = Subset(dataset, range(rank, len(dataset), world_size))  # type: ignore[arg-type]
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, generator=torch.Generator()
    )  # its own generator: evaluating must not draw from the global RNG
    loss = top1 = top5 = 0.0
    n = 0
    for x, y in loader:
        x, y = to_unit_float(x.to(device)), y.to(device)
        logits = forward(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices == y[:, None]
        top1 += float(hits[:, 0].sum())
        top5 += float(hits.any(dim=1).sum())
        n += int(y.shape[0])
    if world_size > 1:
        totals = torch.tensor([loss, top1, top5, float(n)], dtype=torch.float64, device=device)
        all_reduce_([totals], "sum")
        loss, top1, top5, total = totals.tolist()
        n = int(total)
    n = max(n, 1)
    return {"loss": loss / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n}


def op_shares(supernet: Supernet, selection: Selection) -> dict[str, float]:
    """Share of each candidate operation among the selected ones (paper Fig. 5)."""
    counts: Counter[str] = Counter()
    for unit, support in enumerate(selection.support):
        names = supernet.candidate_names(unit)
        counts.update(names[i] for i in support)
    total = sum(counts.values()) or 1
    return {name: c / total for name, c in sorted(counts.items())}
