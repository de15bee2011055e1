"""The paper's Table 5 on the user's hardware.

Rows: the run's derived network and the reference architectures, all counted and timed on
the same device in the same run. The references' Top-1/Top-5 are quoted from the paper's
Table 5 (ImageNet) and marked "(paper)"; everything else is measured here. The paper's own
latencies came from its hardware and are not comparable, so none are quoted.

Written as markdown and CSV, logged to the active MLflow run as artifacts, as an MLflow
table, and as metrics with stable names (:func:`table5_metrics`).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.latency import LatencyConfig, validate_choices
from pipeline.measurement import MeasureReport, measure_target, resolve_target

__all__ = [
    "COLUMNS",
    "DEFAULT_REFERENCES",
    "REFERENCE_MODELS",
    "REFERENCE_TIMING",
    "ReferenceModel",
    "Table5",
    "Table5Row",
    "build_table5",
    "log_table5",
    "measure_references",
    "table5_metrics",
    "write_table5",
]

log = logging.getLogger(__name__)

COLUMNS = ("Model", "Top-1", "Top-5", "Params (M)", "FLOPs (M)", "Latency (ms)", "Search space")
_SPACE_LETTER = {"cell": "C", "mobilenet": "M"}  # the paper's "Search Space" column


@dataclass(frozen=True)
class ReferenceModel:
    """A Table 5 row of the paper: what to build, and the accuracies the paper reports."""

    target: str  # measurement target spec (see pipeline.measurement)
    label: str
    top1: float  # ImageNet, quoted from the paper's Table 5
    top5: float
    space: str  # "C" (cell) or "M" (MobileNet)


REFERENCE_MODELS: dict[str, ReferenceModel] = {
    "darts_v2": ReferenceModel("named:darts_v2", "DARTS (2nd)", 73.3, 91.3, "C"),
    "proxylessnas_gpu": ReferenceModel(
        "named:proxylessnas_gpu", "ProxylessNAS (GPU)", 75.1, 92.5, "M"
    ),
}
DEFAULT_REFERENCES = ("darts_v2", "proxylessnas_gpu")

# References are ImageNet-sized (224 px): keep their timing short in a default CPU run.
REFERENCE_TIMING = LatencyConfig(warmup=2, min_iters=3, max_iters=200, max_seconds=1.0)


@dataclass(frozen=True)
class Table5Row:
    """One row; ``quoted`` marks accuracies copied from the paper rather than measured."""

    model: str
    top1: float | None
    top5: float | None
    params_m: float
    flops_m: float
    latency_ms: float | None
    space: str
    quoted: bool = False

    def _accuracy(self, value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:.1f} (paper)" if self.quoted else f"{value:.1f}"

    def cells(self) -> list[str]:
        """The row as the strings written to markdown and CSV, in :data:`COLUMNS` order."""
        latency = "-" if self.latency_ms is None else f"{self.latency_ms:.2f}"
        return [
            self.model,
            self._accuracy(self.top1),
            self._accuracy(self.top5),
            f"{self.params_m:.2f}",
            f"{self.flops_m:.0f}",
            latency,
            self.space,
        ]


@dataclass
class Table5:
    """Rows plus what the latency column means (backend, device, batch, machine)."""

    rows: list[Table5Row]
    latency_key: str  # e.g. "torch.cpu.bs1"
    environment: dict[str, Any] = field(default_factory=dict)

    def note(self) -> str:
        env = self.environment
        device = env.get("gpu") if ".cuda." in self.latency_key else env.get("cpu")
        return (
            f"Latency: median ms of `{self.latency_key}` on {device or 'this machine'}. "
            "Params/FLOPs/latency measured in this run (FLOPs = multiply-adds, BN excluded); "
            "accuracies marked (paper) are quoted from the paper's Table 5 (ImageNet)."
        )

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(row.cells()) + " |" for row in self.rows]
        return "\n".join(lines) + "\n\n" + self.note() + "\n"

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(row.cells() for row in self.rows)
        return buffer.getvalue()

    def columns(self) -> dict[str, list[str]]:
        """Column name -> cells, the shape ``mlflow.log_table`` takes."""
        return {name: [row.cells()[i] for row in self.rows] for i, name in enumerate(COLUMNS)}


def measure_references(
    names: Sequence[str] = DEFAULT_REFERENCES,
    *,
    resolution: int = 224,
    num_classes: int = 1000,
    batch_sizes: Sequence[int] = (1,),
    timing: LatencyConfig = REFERENCE_TIMING,
    **options: Any,
) -> dict[str, MeasureReport]:
    """Count and time the reference architectures (other options as for ``measure_model``).

    Defaults keep a CPU run cheap: 224 px ImageNet-sized networks, batch 1 only, about one
    second per (backend, device) configuration.
    """
    validate_choices(names, list(REFERENCE_MODELS), "reference architecture")
    reports = {}
    for name in names:
        target = resolve_target(
            REFERENCE_MODELS[name].target, num_classes=num_classes, resolution=resolution
        )
        reports[name] = measure_target(target, batch_sizes=batch_sizes, timing=timing, **options)
        log.info("measured reference %s", name)
    return reports


def _median(report: MeasureReport, latency_key: str) -> float | None:
    result = next((r for r in report.latency if r.key == latency_key), None)
    return result.timing.median_ms if result is not None and result.timing else None


def build_table5(
    derived: MeasureReport | None,
    *,
    top1: float | None = None,
    top5: float | None = None,
    references: dict[str, MeasureReport] | None = None,
    latency_key: str = "torch.cpu.bs1",
    label: str = "DHA (this run)",
) -> Table5:
    """Table 5 rows: the derived network (its accuracies as measured, in %), then references."""
    rows = []
    environment: dict[str, Any] = {}
    if derived is not None:
        rows.append(
            Table5Row(
                model=label,
                top1=top1,
                top5=top5,
                params_m=derived.params_m,
                flops_m=derived.flops_m,
                latency_ms=_median(derived, latency_key),
                space=_SPACE_LETTER.get(derived.space or "", "-"),
            )
        )
        environment = derived.environment
    for name, report in (references or {}).items():
        ref = REFERENCE_MODELS[name]
        rows.append(
            Table5Row(
                model=ref.label,
                top1=ref.top1,
                top5=ref.top5,
                params_m=report.params_m,
                flops_m=report.flops_m,
                latency_ms=_median(report, latency_key),
                space=ref.space,
                quoted=True,
            )
        )
        environment = environment or report.environment
    return Table5(rows=rows, latency_key=latency_key, environment=environment)


def _report_metrics(report: MeasureReport, prefix: str = "") -> dict[str, float]:
    metrics = {f"{prefix}params_m": report.params_m, f"{prefix}flops_m": report.flops_m}
    for result in report.latency:
        if result.timing is None:
            continue
        metrics[f"{prefix}latency_ms.{result.key}"] = result.timing.median_ms
        metrics[f"{prefix}latency_p90_ms.{result.key}"] = result.timing.p90_ms
        if result.throughput_ips is not None:
            metrics[f"{prefix}throughput_ips.{result.key}"] = result.throughput_ips
    return metrics


def table5_metrics(
    derived: MeasureReport | None,
    *,
    top1: float | None = None,
    top5: float | None = None,
    references: dict[str, MeasureReport] | None = None,
) -> dict[str, float]:
    """Stable metric names for ``mlflow.log_metrics``.

    Derived network: ``params_m``, ``flops_m``, ``top1``, ``top5``,
    ``latency_ms.<backend>.<device>.bs<N>`` (median), ``latency_p90_ms.<...>``,
    ``throughput_ips.<...>``; each reference the same under ``ref.<name>.`` (no accuracies:
    those are quoted, not measured).
    """
    metrics = _report_metrics(derived) if derived is not None else {}
    metrics.update({k: v for k, v in (("top1", top1), ("top5", top5)) if v is not None})
    for name, report in (references or {}).items():
        metrics.update(_report_metrics(report, prefix=f"ref.{name}."))
    return metrics


def write_table5(table: Table5, directory: str | Path) -> tuple[Path, Path]:
    """Write ``table5.md`` and ``table5.csv`` into ``directory``; return both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    md, csv_path = directory / "table5.md", directory / "table5.csv"
    md.write_text(table.to_markdown())
    csv_path.write_text(table.to_csv())
    return md, csv_path


def log_table5(
    table: Table5,
    metrics: dict[str, float],
    *,
    reports: dict[str, MeasureReport] | None = None,
    artifact_dir: str = "table5",
) -> None:
    """Log the table (md, csv, MLflow table), the metrics and the JSON reports to the
    active MLflow run."""
    import mlflow

    mlflow.log_text(table.to_markdown(), f"{artifact_dir}/table5.md")
    mlflow.log_text(table.to_csv(), f"{artifact_dir}/table5.csv")
    mlflow.log_table(data=table.columns(), artifact_file=f"{artifact_dir}/table5.json")
    mlflow.log_metrics(metrics)
    for name, report in (reports or {}).items():
        mlflow.log_dict(report.to_dict(), f"{artifact_dir}/measure_{name}.json")
