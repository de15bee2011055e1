"""What a training run reports: the per-epoch record's log line and JSON form, and the
end-of-run artifacts (architecture, freeze events, history, figures)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from dha_train.engine.sink import MetricsSink
    from dha_train.spaces.arch import Architecture

log = logging.getLogger("dha_train.engine.trainer")  # the trainer's log, as before

__all__ = ["NOT_METRICS", "epoch_line", "jsonable", "log_epoch", "log_run_report"]

# per-epoch record entries that are not metrics (bookkeeping, or not numbers)
NOT_METRICS = ("phase", "epoch", "step")


def epoch_line(record: dict[str, Any]) -> str:
    """One readable log line for an epoch record."""
    parts = [
        f"epoch {record['epoch']} (step {record['step']})",
        f"train loss {record['train_loss']:.3f} top-1 {record['train_top1']:.1f}%",
        f"val loss {record['val_loss']:.3f} top-1 {record['val_top1']:.1f}%",
        f"lr {record['lr']:.4g} wd {record['wd']:.3g}",
    ]
    if "tau_kl_uniform" in record:
        top = next(iter(record["tau_top5"]))
        parts.append(
            f"p(tau) KL {record['tau_kl_uniform']:.4f} nats, max {record['tau_max_x_uniform']:.2f}x"
            f" / min {record['tau_min_x_uniform']:.2f}x uniform, top {top}"
        )
    if "frozen_units" in record:
        parts.append(f"frozen {record['frozen_units']} units")
    return "; ".join(parts)


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value if isinstance(value, int | float | str | bool | type(None)) else str(value)


def log_epoch(sink: MetricsSink, record: dict[str, Any], arch: Architecture | None) -> None:
    """An epoch's numeric entries as metrics at its step, its top-5 DA pairs and (in a search
    phase) the architecture so far as artifacts, and its log line."""
    metrics = {
        k: float(v)
        for k, v in record.items()
        if k not in NOT_METRICS and isinstance(v, int | float)
    }
    sink.log_metrics(metrics, record["step"])
    if "tau_top5" in record:
        sink.log_dict(record["tau_top5"], f"tau_top5/epoch_{record['epoch']:03d}.json")
    if arch is not None:
        sink.log_dict(arch.to_dict(), f"architecture/epoch_{record['epoch']:03d}.json")
    log.info("%s", epoch_line(record))


def log_run_report(
    sink: MetricsSink,
    *,
    arch: Architecture,
    history: list[dict[str, Any]],
    config: dict[str, Any],
    probs: np.ndarray | None,
    lr_traj: Sequence[tuple[int, float]],
    wd_traj: Sequence[tuple[int, float]],
) -> None:
    """The end of a run: architecture.json, freeze_events.json (if any unit froze),
    history.json (every epoch record and the config) and the final figures."""
    from dha_train.plots import log_final_figures

    sink.log_dict(arch.to_dict(), "architecture.json")
    freezes = [e for h in history for e in h.get("freeze_events", [])]
    if freezes:
        sink.log_dict({"events": freezes}, "freeze_events.json")
    sink.log_dict({"history": history, "config": jsonable(config)}, "history.json")
    log_final_figures(
        sink,
        probs=probs,
        shares=[h["op_shares"] for h in history if "op_shares" in h],
        lr_traj=lr_traj,
        wd_traj=wd_traj,
    )
