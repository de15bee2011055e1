"""Every seed of a run, derived from the user's one ``seed`` in one function.

Each random stream of a run has a row in :data:`STREAMS`; :func:`derive_seed` turns
``(seed, stream, rank, index)`` into that stream's seed, so streams never collide and a
resumed run re-creates each of them exactly. The coefficients are the ones the streams have
always used, so fixed-seed results are unchanged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from dha_train.errors import check_choice

__all__ = ["STREAMS", "Stream", "derive_seed", "seed_everything", "reseed_resumed_rank"]


@dataclass(frozen=True)
class Stream:
    """seed * seed_mult + rank * rank_mult + index * index_mult + offset (mod 2**63)."""

    seed_mult: int
    rank_mult: int = 0
    index_mult: int = 0
    offset: int = 0


STREAMS: dict[str, Stream] = {
    "process": Stream(1, rank_mult=1),  # python / numpy / torch at the start of a run
    "resume": Stream(1_000_003, 7_919, 104_729),  # a non-zero rank resuming at step index
    "epoch_order": Stream(1_000_003, index_mult=1),  # index = epoch
    "init_weights": Stream(1009, index_mult=1),  # index = phase; equal on every rank
    "augment": Stream(7919, rank_mult=1, offset=1),  # DA pairs, magnitudes, crops, flips
    "hpo_batches": Stream(104_729, rank_mult=1, offset=2),  # the separate HPO batch
    "measurement": Stream(1),  # ISTA's measurement matrices A
    "arch_init": Stream(1, offset=1),  # the initial b
    "warmup_paths": Stream(1, offset=2),  # the random feasible paths of the warm-up
}


def derive_seed(seed: int, stream: str, *, rank: int = 0, index: int = 0) -> int:
    """The seed of ``stream`` for ``rank`` at ``index`` (epoch, phase or step)."""
    check_choice(stream, list(STREAMS), "seed stream")
    s = STREAMS[stream]
    return (seed * s.seed_mult + rank * s.rank_mult + index * s.index_mult + s.offset) % 2**63


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices): the trainer does this once per run and
    when a rank resumes; library code below it only uses its own generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def reseed_resumed_rank(
    seed: int, *, rank: int, step: int, generators: dict[str, torch.Generator]
) -> None:
    """A non-zero rank resuming at ``step``: a checkpoint holds rank 0's streams only, so
    this rank's global RNGs and ``generators`` start afresh from ``(seed, rank, step)``."""
    resumed = derive_seed(seed, "resume", rank=rank, index=step)
    seed_everything(resumed)
    for i, g in enumerate(generators.values()):
        g.manual_seed(resumed + i + 1)
