"""The trainer's reporting sink, backed by the active MLflow run (rank 0 only)."""

from __future__ import annotations

from typing import Any

import mlflow

__all__ = ["MlflowSink"]


class MlflowSink:
    """Forwards the trainer's metrics, dicts and figures to the active MLflow run."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        mlflow.log_dict(data, name)

    def log_figure(self, figure: Any, name: str) -> None:
        mlflow.log_figure(figure, name)
