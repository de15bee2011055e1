"""compare: a table of runs side by side and an accuracy-vs-latency plot.

Reads the measure runs of an experiment (default: the one ``dha run`` runs in; run alone,
every experiment), of the given run ids (short ids work), or behind the versions of a
registered model. Writes compare.md, compare.csv and
accuracy_vs_latency.png (Pareto front marked) to the run and prints the table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from dha_train.errors import UserError
from pipeline.compare import build_comparison, collect_runs, plot_comparison
from pipeline.outputs import STEP_OUTPUTS
from pipeline.params import PARAMS, STEP_PARAMS, add_params, parse_values
from pipeline.runs import step_run

__all__ = ["add_arguments", "run"]

_SOURCES = ("experiment", "run_ids", "registered_model")  # each alone picks the runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params(parser, STEP_PARAMS["compare"])


def _experiment_ids(client: MlflowClient, name: str) -> list[str]:
    """The named experiment; else the one this step runs in (``dha run``); else all of them."""
    if not name:
        active = os.environ.get("MLFLOW_EXPERIMENT_ID")
        return [active] if active else [e.experiment_id for e in client.search_experiments()]
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise UserError(f"no experiment named {name!r}: pass an existing one (see the MLflow UI)")
    return [experiment.experiment_id]


def run(args: argparse.Namespace) -> None:
    values = parse_values(args, STEP_PARAMS["compare"])
    run_ids = [r.strip() for r in values["run_ids"].split(",") if r.strip()]
    chosen = [PARAMS[k].flag for k in _SOURCES if values[k]]
    if len(chosen) > 1:
        raise UserError(f"{' and '.join(chosen)} both choose the runs to compare: pass one of them")
    with step_run("compare", values) as active:
        client = MlflowClient()
        by_experiment = values["experiment"] or not (run_ids or values["registered_model"])
        experiments = _experiment_ids(client, values["experiment"]) if by_experiment else []
        model = values["registered_model"]
        rows = collect_runs(client, experiment_ids=experiments, run_ids=run_ids, model_name=model)
        comparison = build_comparison(rows)
        mlflow.log_text(comparison.to_markdown(), STEP_OUTPUTS["compare"])
        mlflow.log_text(comparison.to_csv(), "compare/compare.csv")
        with tempfile.TemporaryDirectory() as tmp:
            plot = plot_comparison(comparison, Path(tmp) / "accuracy_vs_latency.png")
            if plot is not None:
                mlflow.log_artifact(str(plot), "compare")
        print(comparison.to_markdown(), flush=True)
        print(
            f"[compare] {len(rows)} runs; table and plot logged to run {active.info.run_id} "
            "(artifacts compare/)",
            flush=True,
        )
