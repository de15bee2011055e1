"""The batches of one epoch: a permutation fixed by (seed, epoch), this rank's share,
resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from dha_train.engine.seeding import derive_seed
from dha_train.train_config import TrainConfig

__all__ = ["EpochBatches"]


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
        cfg: TrainConfig,
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
        g = torch.Generator().manual_seed(derive_seed(self.seed, "epoch_order", index=self.epoch))
        perm = torch.randperm(self.n, generator=g)[self.rank :: self.world].tolist()
        for b in range(self.start, self._total()):
            batch = perm[b * self.batch_size : (b + 1) * self.batch_size]
            if len(batch) < self.batch_size and b > 0:
                return
            yield batch
