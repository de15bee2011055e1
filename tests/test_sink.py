"""The trainer's MLflow sink logs measurements, not the counters that index them."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

from pipeline.sink import BOOKKEEPING, MlflowSink


def test_epoch_step_and_phase_are_not_metrics(mlflow_store: str) -> None:
    with mlflow.start_run() as run:
        MlflowSink().log_metrics({"epoch": 1, "step": 40, "phase": 0, "val_top1": 91.5}, step=40)
    history = MlflowClient(mlflow_store).get_metric_history(run.info.run_id, "val_top1")
    assert [(m.value, m.step) for m in history] == [(91.5, 40)]
    logged = MlflowClient(mlflow_store).get_run(run.info.run_id).data.metrics
    assert set(logged) == {"val_top1"} and not BOOKKEEPING & set(logged)
