"""The paper's Table 5 on the user's hardware.

Rows: the run's derived network and the reference architectures, all counted and timed on
the same device in the same run. Each reference appears twice: in the paper's setting (224
px, 1000 classes), with its Top-1/Top-5 quoted from the paper's Table 5 (ImageNet) and
marked "(paper)", and at the run's own input size and class count, the like-for-like
latency, without accuracy (it was not trained here). Every row names its input and where its
accuracy comes from. The paper's own latencies came from its hardware and are not
comparable, so none are quoted.

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

from dha_train.errors import check_choices
from dha_train.spaces.registry import SPACES
from pipeline.latency import LatencyConfig, validate_choices
from pipeline.measurement import MeasureReport, measure_target, resolve_target

__all__ = [
    "COLUMNS",
    "DEFAULT_REFERENCES",
    "REFERENCE_MODELS",
    "REFERENCE_TIMING",
    "PAPER_SETTING",
    "ReferenceModel",
    "Table5",
    "Table5Row",
    "build_table5",
    "log_table5",
    "measure_references",
    "parse_references",
    "reference_key",
    "table5_metrics",
    "write_table5",
]

log = logging.getLogger(__name__)

COLUMNS = (
    "Model",
    "Input",
    "Top-1",
    "Top-5",
    "Accuracy from",
    "Params (M)",
    "FLOPs (M)",
    "Latency (ms)",
    "Search space",
)
PAPER_SETTING = (224, 1000)  # (input px, classes) of the paper's Table 5: ImageNet


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
    resolution: int
    num_classes: int
    source: str  # where Top-1/Top-5 come from
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
            f"{self.resolution} px, {self.num_classes} classes",
            self._accuracy(self.top1),
            self._accuracy(self.top5),
            self.source,
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
            "accuracies marked (paper) are quoted from the paper's Table 5 (ImageNet, 224 px) "
            "and compare with nothing measured on another dataset; compare latency only "
            "between rows of the same input."
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


def parse_references(raw: str) -> tuple[str, ...]:
    """'proxylessnas_gpu,darts_v2' -> ('proxylessnas_gpu', 'darts_v2'), each checked against
    :data:`REFERENCE_MODELS` ('' = none)."""
    return check_choices(raw, list(REFERENCE_MODELS), "reference architecture")


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
        report = measure_target(target, batch_sizes=batch_sizes, timing=timing, **options)
        reports[reference_key(name, report)] = report
        log.info("measured reference %s at %d px, %d classes", name, resolution, num_classes)
    return reports


def _median(report: MeasureReport, latency_key: str) -> float | None:
    result = next((r for r in report.latency if r.key == latency_key), None)
    return result.timing.median_ms if result is not None and result.timing else None


def reference_key(name: str, report: MeasureReport) -> str:
    """``name`` in the paper's setting, else ``<name>.<R>px_<C>cls`` (metric-name safe)."""
    if (report.resolution, report.num_classes) == PAPER_SETTING:
        return name
    return f"{name}.{report.resolution}px_{report.num_classes}cls"


def _reference_row(key: str, report: MeasureReport, latency_key: str) -> Table5Row:
    ref = REFERENCE_MODELS[key.split(".", 1)[0]]
    paper = (report.resolution, report.num_classes) == PAPER_SETTING
    return Table5Row(
        model=ref.label,
        top1=ref.top1 if paper else None,
        top5=ref.top5 if paper else None,
        params_m=report.params_m,
        flops_m=report.flops_m,
        latency_ms=_median(report, latency_key),
        space=ref.space,
        resolution=report.resolution,
        num_classes=report.num_classes,
        source="ImageNet val (paper)" if paper else "not trained here",
        quoted=paper,
    )


def build_table5(
    derived: MeasureReport | None,
    *,
    top1: float | None = None,
    top5: float | None = None,
    references: dict[str, MeasureReport] | None = None,
    latency_key: str = "torch.cpu.bs1",
    label: str = "DHA (this run)",
    dataset: str = "this run's",
) -> Table5:
    """Table 5 rows: the derived network (its accuracies as measured, in %, on ``dataset``'s
    test split), then the references (keys as :func:`reference_key` makes them)."""
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
                space=SPACES[derived.space].letter if derived.space in SPACES else "-",
                resolution=derived.resolution,
                num_classes=derived.num_classes,
                source=f"{dataset} test split (measured)",
            )
        )
        environment = derived.environment
    for key, report in (references or {}).items():
        rows.append(_reference_row(key, report, latency_key))
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
    ``throughput_ips.<...>``; each reference the same under ``ref.<key>.``, the key as
    :func:`reference_key` makes it (no accuracies: those are quoted, not measured).
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
