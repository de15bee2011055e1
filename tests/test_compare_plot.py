"""The compare plot: runs, Pareto front and the references timed beside them, read from MLflow."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

from pipeline.compare import build_comparison, collect_runs, comparison_figure, plot_comparison


def _measure_run(top1: float, latency: float, refs: dict[str, float]) -> str:
    with mlflow.start_run() as run:
        mlflow.set_tags({"dha.step": "measure", "dha.dataset": "digits", "dha.space": "cell"})
        mlflow.log_metrics({"top1": top1, "latency_ms.torch.cpu.bs1": latency})
        mlflow.log_metrics({f"ref.{k}.latency_ms.torch.cpu.bs1": v for k, v in refs.items()})
    return run.info.run_id


def test_references_are_drawn_beside_the_runs_and_accuracy_stays_in_percent(
    mlflow_store: str, tmp_path
) -> None:
    refs = {"proxylessnas_gpu": 12.0, "proxylessnas_gpu.16px_10cls": 1.5}
    ids = [_measure_run(97.0, 1.0, refs), _measure_run(99.5, 2.0, {})]
    client = MlflowClient(mlflow_store)
    experiment = client.get_run(ids[0]).info.experiment_id
    rows = collect_runs(client, experiment_ids=[experiment])
    by_id = {r.run_id: r for r in rows}
    assert by_id[ids[0]].references == {key: {"torch.cpu.bs1": ms} for key, ms in refs.items()}
    figure = comparison_figure(build_comparison(rows))
    (ax,) = figure.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "ProxylessNAS (GPU) @ 224 px" in labels and "ProxylessNAS (GPU) @ 16 px" in labels
    lines = {line.get_label(): line.get_xdata()[0] for line in ax.get_lines()}
    assert lines["ProxylessNAS (GPU) @ 16 px"] == refs["proxylessnas_gpu.16px_10cls"]
    assert ax.get_ylim()[1] <= 100.5 and ax.get_xscale() == "log"  # 1 ms to 12 ms
    path = plot_comparison(build_comparison(rows), tmp_path / "plot.png")
    assert path is not None and path.stat().st_size > 0
