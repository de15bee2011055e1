"""The trainer's freezing gate: when a search may fix its units, and the record of each freeze.

At each epoch end the search's rule (``freeze_rule``) may freeze the units that settled, but
the window rule only once validation top-1 is clearly above chance: chance + ``freeze_margin``
of the way to 100% (32.5% on 10 classes at the default 0.25). At the deadline ``freeze_by``
of the phase's epochs every unit still moving freezes at its current support, but the
deadline waits for the same gate: a search still below it goes on, and only at the phase's
last epoch does every unit freeze whatever the accuracy (reason ``end_of_phase``). Each
freeze is recorded with its step, epoch, validation top-1 and reason.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from dha_train.nas.search import ArchitectureSearch
from dha_train.train_config import TrainConfig

__all__ = ["accuracy_gate", "freeze_at_epoch_end"]

log = logging.getLogger(__name__)


def accuracy_gate(num_classes: int, margin: float) -> float:
    """Validation top-1 (percent) above which the window rule may freeze units."""
    chance = 100.0 / num_classes
    return chance + margin * (100.0 - chance)


def freeze_at_epoch_end(
    search: ArchitectureSearch,
    cfg: TrainConfig,
    record: dict[str, Any],
    *,
    epoch: int,
    epochs: int,
    step: int,
    num_classes: int,
) -> list[dict[str, Any]]:
    """Freeze what may freeze after ``epoch`` (0-based) of ``epochs``; the freeze events."""
    gate = accuracy_gate(num_classes, cfg.freeze_margin)
    events: list[dict[str, Any]] = []

    def note(units: list[int], reason: str) -> None:
        if not units:
            return
        events.append(
            {"units": units, "reason": reason, "step": step, "epoch": record["epoch"],
             "val_top1": record["val_top1"]}
        )  # fmt: skip
        log.info(
            "froze units %s (%s) at step %d, epoch %d, validation top-1 %.1f%% (gate "
            "%.1f%%): %d/%d frozen",
            units, reason, step, record["epoch"], record["val_top1"], gate,
            search.num_frozen, len(search.frozen),
        )  # fmt: skip

    above = record["val_top1"] >= gate
    note(search.end_epoch(allow_freeze=above), cfg.freeze_rule)
    deadline = epoch + 1 >= math.ceil(cfg.freeze_by * epochs)
    if deadline and (above or epoch + 1 >= epochs):
        note(search.freeze_all(), "deadline" if above else "end_of_phase")
    return events
