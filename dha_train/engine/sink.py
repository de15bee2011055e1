"""MetricsSink: where the trainer reports (the pipeline backs it with MLflow on rank 0).

The engine never imports MLflow; anything with these three methods will do (the tests use
a recording sink).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MetricsSink", "NullSink"]


class MetricsSink(Protocol):
    """Receives metrics, JSON documents and figures."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_dict(self, data: dict[str, Any], name: str) -> None: ...
    def log_figure(self, figure: Figure, name: str) -> None: ...


class NullSink:
    """A sink that keeps nothing (ranks other than 0)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        del metrics, step

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        del data, name

    def log_figure(self, figure: Figure, name: str) -> None:
        del figure, name
