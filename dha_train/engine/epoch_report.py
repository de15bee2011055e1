"""The per-epoch record of a training run: its readable log line and its JSON form."""

from __future__ import annotations

from typing import Any

__all__ = ["NOT_METRICS", "epoch_line", "jsonable"]

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
