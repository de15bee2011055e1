"""Evaluation of a network or of the supernet's current child (top-1/top-5 in percent,
reduced over ranks) and the share of each op in a selection."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from dha_train.data import to_unit_float
from dha_train.engine.distributed import all_reduce_
from dha_train.spaces.base import Selection, Supernet

__all__ = ["evaluate", "op_shares"]


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
