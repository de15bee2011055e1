"""The trainer's reporting sink, backed by the active MLflow run (rank 0 only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mlflow

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MlflowSink", "BOOKKEEPING"]

# Counters, not measurements: MLflow's step axis (and history.json) carries them; as metrics
# they would chart as straight lines.
BOOKKEEPING = frozenset({"epoch", "step", "phase"})


class MlflowSink:
    """Forwards the trainer's metrics, dicts and figures to the active MLflow run."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        kept = {k: float(v) for k, v in metrics.items() if k not in BOOKKEEPING}
        mlflow.log_metrics(kept, step=step)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        mlflow.log_dict(data, name)

    def log_figure(self, figure: Figure, name: str) -> None:
        mlflow.log_figure(figure, name)
