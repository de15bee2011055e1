"""Runs side by side: accuracy, size and latency per backend and device, sorted by latency.

Rows come from ``measure`` step runs, which carry the Table 5 metrics (``top1``, ``params_m``,
``latency_ms.<backend>.<device>.bs<N>``...) and, as tags, what the run searched (dataset,
space, mode, budgets) and the name of each device it timed on. A latency column holds one
backend on one device kind; where its rows were timed on different machines, each cell
names its machine and the header says the column is mixed.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from dha_train.errors import UserError
from pipeline.artifacts import DESCRIPTIVE_KEYS
from pipeline.run_ids import resolve_run_id
from pipeline.table5 import PAPER_SETTING, REFERENCE_MODELS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CompareRow",
    "Comparison",
    "collect_runs",
    "build_comparison",
    "pareto_front",
    "plot_comparison",
    "comparison_figure",
]

_LATENCY_PREFIX = "latency_ms."
_REFERENCE_COLORS = ("C2", "C4", "C5", "C6", "C8", "C9")  # not the runs' blue or the front's red


@dataclass
class CompareRow:
    run_id: str
    info: dict[str, str]
    top1: float | None
    top5: float | None
    params_m: float | None
    flops_m: float | None
    latency: dict[str, float] = field(default_factory=dict)  # "<backend>.<device>.bs<N>" -> ms
    devices: dict[str, str] = field(default_factory=dict)  # "cpu"/"cuda" -> machine name
    # reference key (table5.reference_key) -> latency key -> ms, timed in the same run
    references: dict[str, dict[str, float]] = field(default_factory=dict)


def _references(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """``ref.<key>.latency_ms.<latency key>`` metrics, grouped by reference key."""
    out: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        key, sep, latency_key = name.removeprefix("ref.").partition("." + _LATENCY_PREFIX)
        if name.startswith("ref.") and sep:
            out.setdefault(key, {})[latency_key] = value
    return out


def _row(run: Run) -> CompareRow:
    m, tags = run.data.metrics, run.data.tags
    return CompareRow(
        run_id=run.info.run_id,
        info={k: tags.get(f"dha.{k}", "") for k in DESCRIPTIVE_KEYS},
        top1=m.get("top1"),
        top5=m.get("top5"),
        params_m=m.get("params_m"),
        flops_m=m.get("flops_m"),
        latency={
            k.removeprefix(_LATENCY_PREFIX): v
            for k, v in m.items()
            if k.startswith(_LATENCY_PREFIX)
        },
        devices={
            k.removeprefix("dha.device_name."): v
            for k, v in tags.items()
            if k.startswith("dha.device_name.")
        },
        references=_references(m),
    )


def collect_runs(
    client: MlflowClient,
    *,
    experiment_ids: Sequence[str] = (),
    run_ids: Sequence[str] = (),
    model_name: str = "",
) -> list[CompareRow]:
    """Measure runs of experiments, of explicit run ids (a main run stands for its measure
    step), or behind the versions of a registered model."""
    runs: dict[str, Run] = {}
    if experiment_ids:
        for run in client.search_runs(
            list(experiment_ids),
            filter_string="tags.`dha.step` = 'measure' and attributes.status = 'FINISHED'",
            max_results=1000,
        ):
            runs[run.info.run_id] = run
    ids = list(run_ids)
    if model_name:
        versions = client.search_model_versions(f"name = '{model_name}'")
        if not versions:
            raise UserError(
                f"no registered model {model_name!r}: see `mlflow models` or the MLflow UI"
            )
        ids += [v.tags["measure_run_id"] for v in versions if "measure_run_id" in v.tags]
    for given in ids:
        run = client.get_run(resolve_run_id(client, given))
        measure_id = run.data.tags.get("dha.run.measure", run.info.run_id)
        if measure_id != run.info.run_id:
            run = client.get_run(measure_id)
        if run.data.tags.get("dha.step") != "measure":
            step = run.data.tags.get("dha.step", "not a dha step")
            raise UserError(
                f"run {given!r} is a {step} run, which has no Table 5 figures: pass the id of a "
                "main (dha run) or measure run"
            )
        runs[run.info.run_id] = run
    return [_row(r) for r in runs.values()]


@dataclass
class Comparison:
    rows: list[CompareRow]
    columns: list[str]  # latency keys, e.g. "onnxruntime.cpu.bs1"
    sort_key: str | None
    mixed: dict[str, list[str]]  # latency key -> distinct machine names, where more than one

    def header(self) -> list[str]:
        lat = [f"{c} (ms){' [mixed devices]' if c in self.mixed else ''}" for c in self.columns]
        return ["run", *DESCRIPTIVE_KEYS, "top1", "top5", "params_m", "flops_m", *lat]

    def cells(self, row: CompareRow) -> list[str]:
        def num(v: float | None, fmt: str = "{:.2f}") -> str:
            return "" if v is None else fmt.format(v)

        lat = []
        for c in self.columns:
            value = num(row.latency.get(c))
            if value and c in self.mixed:
                value += f" ({row.devices.get(c.split('.')[1], '?')})"
            lat.append(value)
        return [
            row.run_id[:8],
            *(row.info[k] for k in DESCRIPTIVE_KEYS),
            num(row.top1),
            num(row.top5),
            num(row.params_m, "{:.3f}"),
            num(row.flops_m, "{:.1f}"),
            *lat,
        ]

    def to_markdown(self) -> str:
        head = self.header()
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(self.cells(r)) + " |" for r in self.rows]
        if self.mixed:
            lines.append("")
            lines += [f"{c}: timed on {', '.join(names)}" for c, names in self.mixed.items()]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(self.header())
        writer.writerows(self.cells(r) for r in self.rows)
        return buf.getvalue()


def build_comparison(rows: list[CompareRow]) -> Comparison:
    """Columns for every latency measured, rows sorted by the first batch-1 column."""
    if not rows:
        raise UserError("nothing to compare: no FINISHED measure runs found; run `dha run` first")
    columns = sorted(
        {k for r in rows for k in r.latency}, key=lambda k: (not k.endswith(".bs1"), k)
    )
    mixed = {}
    for c in columns:
        device = c.split(".")[1]
        names = sorted({r.devices.get(device, "?") for r in rows if c in r.latency})
        if len(names) > 1:
            mixed[c] = names
    preferred = [c for c in columns if c.endswith(".bs1")]
    sort_key = max(preferred, key=lambda c: sum(c in r.latency for r in rows), default=None)
    if sort_key:
        rows = sorted(rows, key=lambda r: r.latency.get(sort_key, math.inf))
    return Comparison(rows=rows, columns=columns, sort_key=sort_key, mixed=mixed)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, accuracy) that no other point beats on both."""
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any(
            (lat2 <= lat and acc2 >= acc) and (lat2 < lat or acc2 > acc)
            for j, (lat2, acc2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _reference_label(key: str) -> str:
    name, _, setting = key.partition(".")
    ref = REFERENCE_MODELS.get(name)
    size = setting.split("px")[0] if setting else str(PAPER_SETTING[0])
    return f"{ref.label if ref else name} @ {size} px"


def comparison_figure(comparison: Comparison) -> Figure | None:
    """Top-1 against the sort column's latency, Pareto front marked; the references timed in
    the same runs as dotted vertical lines (their accuracy on these datasets is unknown).
    None if nothing to plot."""
    from matplotlib.figure import Figure  # matplotlib's object API: no pyplot state

    key = comparison.sort_key
    rows = [r for r in comparison.rows if key and key in r.latency and r.top1 is not None]
    if not rows:
        return None
    points = [(r.latency[key], float(r.top1)) for r in rows]  # type: ignore[index, arg-type]
    front = pareto_front(points)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.scatter(*zip(*points, strict=True), color="tab:blue", label="runs (test top-1)")
    for r, (x, y) in zip(rows, points, strict=True):
        ax.annotate(
            f"{r.info['dataset']} {r.info['space']}/{r.info['mode']} {r.run_id[:6]}",
            (x, y),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    fx, fy = zip(*(points[i] for i in front), strict=True)
    ax.plot(fx, fy, "o--", color="tab:red", label="Pareto front")
    refs = {ref: lat[key] for r in rows for ref, lat in r.references.items() if key in lat}
    for i, (ref, latency) in enumerate(sorted(refs.items(), key=lambda kv: kv[1])):
        color = _REFERENCE_COLORS[i % len(_REFERENCE_COLORS)]
        ax.axvline(latency, color=color, ls=":", label=_reference_label(ref))
    xs = [x for x, _ in points] + list(refs.values())
    if max(xs) > 10 * min(xs):
        ax.set_xscale("log")
    low = min(y for _, y in points)
    ax.set_ylim(max(0.0, low - 5.0), min(100.0, max(y for _, y in points) + 2.0) + 0.5)
    device = comparison.mixed.get(key, None)
    ax.set_xlabel(f"latency {key} (ms){' [mixed devices]' if device else ''}")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_comparison(comparison: Comparison, path: Path) -> Path | None:
    """:func:`comparison_figure` saved as a PNG at ``path``; None if nothing to plot."""
    fig = comparison_figure(comparison)
    if fig is None:
        return None
    fig.savefig(path, dpi=120)
    return path
