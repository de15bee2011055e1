"""Table 5: rows, writers, metric names and logging into a real SQLite-backed MLflow run."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from torch import nn

from dha_train.errors import ConfigError
from pipeline.latency import LatencyConfig
from pipeline.measurement import MeasureReport, measure_model
from pipeline.table5 import (
    COLUMNS,
    PAPER_SETTING,
    REFERENCE_MODELS,
    build_table5,
    log_table5,
    measure_references,
    reference_key,
    table5_metrics,
    write_table5,
)

FAST = LatencyConfig(warmup=1, min_iters=3, max_iters=50, max_seconds=0.05)


def _report(
    width: int, space: str | None, resolution: int = 16, num_classes: int = 10
) -> MeasureReport:
    model = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )
    return measure_model(
        model,
        resolution=resolution,
        num_classes=num_classes,
        batch_sizes=(1, 2),
        threads=1,
        timing=FAST,
        name=f"w{width}",
        space=space,
    )


@pytest.fixture(scope="module")
def reports() -> tuple[MeasureReport, dict[str, MeasureReport]]:
    # Tiny stand-ins measured for real; the reference rows take their labels and quoted
    # accuracies from REFERENCE_MODELS, their numbers from these reports: one in the paper's
    # setting (224 px, 1000 classes), one at the run's input and class count.
    paper, here = _report(4, None, *PAPER_SETTING), _report(4, None)
    return _report(8, "mobilenet"), {
        reference_key("darts_v2", paper): paper,
        reference_key("darts_v2", here): here,
    }


def test_markdown_and_csv_carry_the_papers_columns_and_quote_marks(tmp_path, reports):
    derived, refs = reports
    assert set(refs) == {"darts_v2", "darts_v2.16px_10cls"}
    table = build_table5(derived, top1=91.25, top5=99.5, references=refs, dataset="digits")
    md_path, csv_path = write_table5(table, tmp_path / "out")
    md = md_path.read_text()
    assert md.splitlines()[0] == "| " + " | ".join(COLUMNS) + " |"
    latency = derived.latency_of("torch", "cpu", 1).timing.median_ms
    assert (
        f"| DHA (this run) | 16 px, 10 classes | 91.2 | 99.5 | digits test split (measured) "
        f"| {derived.params_m:.2f} | {derived.flops_m:.0f} | {latency:.2f} | M |" in md
    )
    assert (
        "| DARTS (2nd) | 224 px, 1000 classes | 73.3 (paper) | 91.3 (paper) "
        "| ImageNet val (paper) |" in md
    )
    assert "| DARTS (2nd) | 16 px, 10 classes | - | - | not trained here |" in md
    assert "quoted from the paper" in md and "torch.cpu.bs1" in md

    rows = list(csv.reader(io.StringIO(csv_path.read_text())))
    assert rows[0] == list(COLUMNS)
    column = {name: i for i, name in enumerate(COLUMNS)}
    assert [rows[1][column[c]] for c in ("Model", "Top-1", "Top-5", "Search space")] == [
        "DHA (this run)",
        "91.2",
        "99.5",
        "M",
    ]
    assert rows[2][column["Top-1"]] == "73.3 (paper)" and rows[2][column["Search space"]] == "C"
    for row, key in ((rows[2], "darts_v2"), (rows[3], "darts_v2.16px_10cls")):
        params = float(row[column["Params (M)"]])
        assert params == pytest.approx(refs[key].params_m, abs=0.005)
        assert float(row[column["Latency (ms)"]]) == pytest.approx(
            refs[key].latency_of("torch", "cpu", 1).timing.median_ms, abs=0.005
        )


def test_missing_accuracy_and_latency_print_as_dashes(reports):
    derived, _ = reports
    table = build_table5(derived, latency_key="tensorrt.cuda.bs1")
    cells = dict(zip(COLUMNS, table.rows[0].cells(), strict=True))
    assert [cells["Top-1"], cells["Top-5"], cells["Latency (ms)"]] == ["-", "-", "-"]


def test_metric_names_are_stable(reports):
    derived, refs = reports
    metrics = table5_metrics(derived, top1=91.0, top5=99.0, references=refs)
    keys = {
        f"{name}.torch.cpu.bs{n}"
        for name in ("latency_ms", "latency_p90_ms", "throughput_ips")
        for n in (1, 2)
    }
    assert set(metrics) == {"params_m", "flops_m", "top1", "top5", *keys} | {
        f"ref.{ref}.{k}"
        for ref in ("darts_v2", "darts_v2.16px_10cls")
        for k in ("params_m", "flops_m", *keys)
    }
    assert metrics["params_m"] == derived.params_m
    assert (
        metrics["latency_ms.torch.cpu.bs2"]
        == derived.latency_of("torch", "cpu", 2).timing.median_ms
    )


def test_logs_artifacts_table_and_metrics_to_the_active_run(tmp_path, mlflow_store, reports):
    derived, refs = reports
    table = build_table5(derived, top1=90.0, top5=99.0, references=refs)
    metrics = table5_metrics(derived, top1=90.0, top5=99.0, references=refs)
    with mlflow.start_run() as run:
        log_table5(table, metrics, reports={"derived": derived, **refs})
    client = MlflowClient(mlflow_store)
    assert client.get_run(run.info.run_id).data.metrics == pytest.approx(metrics)
    names = {a.path for a in client.list_artifacts(run.info.run_id, "table5")}
    assert names == {
        "table5/table5.md",
        "table5/table5.csv",
        "table5/table5.json",
        "table5/measure_derived.json",
        "table5/measure_darts_v2.json",
        "table5/measure_darts_v2.16px_10cls.json",
    }
    local = Path(client.download_artifacts(run.info.run_id, "table5", str(tmp_path)))
    assert (local / "table5.md").read_text() == table.to_markdown()
    assert (local / "table5.csv").read_text() == table.to_csv()
    logged_table = json.loads((local / "table5.json").read_text())
    assert logged_table["columns"] == list(COLUMNS)
    assert logged_table["data"][1][COLUMNS.index("Top-1")] == "73.3 (paper)"
    report = json.loads((local / "measure_derived.json").read_text())
    assert report["schema_version"] == 1 and report["params"] == derived.params


def test_unknown_reference_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown reference architecture 'darts'"):
        measure_references(["darts"])


def test_references_measured_at_small_resolution():
    pytest.importorskip("dha_train.spaces.named", reason="named architectures not available yet")
    refs = measure_references(
        resolution=32, num_classes=10, backends=("torch",), threads=1, timing=FAST
    )
    assert set(refs) == {f"{name}.32px_10cls" for name in REFERENCE_MODELS}
    table = build_table5(None, references=refs)
    assert all(row.top1 is None and row.source == "not trained here" for row in table.rows)
    assert [row.model for row in table.rows] == ["DARTS (2nd)", "ProxylessNAS (GPU)"]
    assert all(row.latency_ms and row.latency_ms > 0 for row in table.rows)
    assert all(row.params_m > 0 and row.flops_m > 0 for row in table.rows)
