"""main (``dha run``): the whole pipeline, one child run per step.

search_train -> measure -> export -> register -> compare, each an MLproject entry
point started with ``mlflow.projects.run`` as in MLflow's multistep example. Steps hand each
other run ids (whose artifacts and ``models:/`` URIs they read). A step that already
FINISHED with the same parameters and code version is reused (``--reuse false`` reruns).
Bad input is caught here, before any step starts.

After a crash: runs left RUNNING by a process that is gone are marked FAILED, tagged with
the main run that replaced them, and an interrupted search_train run with a checkpoint is
continued (same run id, metrics appended from the checkpoint's step) unless ``--reuse false``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from dha_train.errors import UserError
from pipeline.artifacts import given_architecture_id
from pipeline.backends import parse_backends
from pipeline.dataset_inputs import log_splits
from pipeline.outputs import download_output, read_output_json
from pipeline.params import PARAMS, STEP_PARAMS, add_params, parse_values
from pipeline.runs import (
    ERROR_TAG,
    as_strings,
    default_tracking_uri,
    find_resumable_run,
    find_reusable_run,
    project_root,
    reopen_run,
    retire_orphans,
    step_run,
)
from pipeline.steps import search_train
from pipeline.table5 import parse_references

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)


_EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
STEPS = ("search_train", "measure", "export", "register", "compare")
# step parameters that carry an earlier step's run id
RUN_ID_PARAMS = {
    "search_run_id": "search_train",
    "measure_run_id": "measure",
    "export_run_id": "export",
}
# steps whose interrupted run a rerun continues: step -> test of a run for a checkpoint
RESUMABLE = {"search_train": search_train.resumable}


class StepFailed(UserError):
    """A step run ended FAILED; its own error line was printed above."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params(parser, STEP_PARAMS["main"])


def job_label(values: dict[str, Any]) -> str:
    """What a run is about, for run and experiment names: ``digits mobilenet dha``."""
    return f"{values['dataset']} {values['space']} {values['mode']}"


def _use_named_experiment(values: dict[str, Any]) -> None:
    """Log to an experiment named after the job (``dha-<space>-<dataset>``), not Default.

    ``mlflow run`` (which picks the experiment itself: --experiment-name) and an explicit
    MLFLOW_EXPERIMENT_NAME / MLFLOW_EXPERIMENT_ID win.
    """
    if any(os.environ.get(k) for k in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")):
        return
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or f"dha-{values['space']}-{values['dataset']}"
    mlflow.set_tracking_uri(default_tracking_uri())
    mlflow.set_experiment(name)


def _description(values: dict[str, Any], summary: str) -> str:
    """The parent run's description (MLflow's note): what was searched, budgets, results."""
    budgets = ", ".join(
        f"{k} <= {values[k]}"
        for k in ("max_params_m", "max_flops_m", "max_latency_ms")
        if values.get(k) is not None
    )
    return (
        f"DHA ({values['mode']}) on **{values['dataset']}**, {values['space']} space, "
        f"budget: {budgets or 'none'}, target device {values['target_device']}. "
        "Child runs: one per step.\n" + summary
    )


def _launch(
    step: str, params: dict[str, Any], *, parent: mlflow.ActiveRun, reuse: bool, label: str
) -> str:
    """Run (or reuse) one step as a child run of ``parent``; return its run id."""
    experiment_id = parent.info.experiment_id
    strings = as_strings(params)
    if reuse:
        found = find_reusable_run(step, strings, experiment_id)
        if found is not None:
            print(f"[{step}] reusing FINISHED run {found.info.run_id}", flush=True)
            mlflow.set_tag(f"dha.run.{step}", found.info.run_id)
            return found.info.run_id
    client = MlflowClient()
    interrupted = None
    if reuse and step in RESUMABLE:
        interrupted = find_resumable_run(step, strings, experiment_id, RESUMABLE[step](params))
    if interrupted is not None:
        run_id = interrupted.info.run_id
        reopen_run(run_id, parent_id=parent.info.run_id)
        print(f"[{step}] continuing interrupted run {run_id} from its checkpoint", flush=True)
    else:
        run_id = client.create_run(
            experiment_id,
            run_name=f"{step}: {label}",
            tags={"mlflow.parentRunId": parent.info.run_id},
        ).info.run_id
        print(f"[{step}] starting run {run_id}", flush=True)
    mlflow.set_tag(f"dha.run.{step}", run_id)
    try:
        mlflow.projects.run(
            str(project_root()),
            entry_point=step,
            parameters=strings,
            env_manager="local",
            run_id=run_id,
            experiment_id=experiment_id,
            synchronous=True,
        )
    except mlflow.exceptions.ExecutionException:
        reason = client.get_run(run_id).data.tags.get(ERROR_TAG, "see its log above")
        raise StepFailed(f"step {step} failed (run {run_id}): {reason}") from None
    return run_id


def _summary(client: MlflowClient, measure_id: str, register_id: str) -> str:
    """The run's Table 5 row and the models:/ URIs to fetch."""
    lines = []
    rows = download_output("measure", measure_id).read_text().strip().splitlines()
    lines += ["", "Table 5 (this machine):", *rows[:3]]
    registered = read_output_json("register", register_id)
    lines += ["", "Registered models (fetch with dha predict --model <uri> <images>):"]
    lines += [
        f"  {r['format']:9s} {r['uri']}  (version {r['version']})" for r in registered["versions"]
    ]
    lines += [f"  {s['format']:9s} skipped: {s['reason']}" for s in registered.get("skipped", [])]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    values = parse_values(args, STEP_PARAMS["main"])
    values["architecture"] = given_architecture_id(values["architecture"])
    # the steps run `dha <step>` in a shell: make this interpreter's `dha` the one found
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    search_params = {k: values[k] for k in STEP_PARAMS["search_train"]}
    data = search_train.preflight(search_params, formats=values["formats"])  # before any step
    parse_backends(values["backends"])  # measure's lists, checked before the search trains
    parse_references(values["references"])
    # the steps run in the project folder: they must find this folder's checkpoints
    os.environ[search_train.CHECKPOINT_DIR_ENV] = str(search_train.checkpoint_root())
    _use_named_experiment(values)
    with step_run("main", values) as parent:
        retire_orphans(parent.info.experiment_id, replaced_by=parent.info.run_id)
        mlflow.set_tag("mlflow.runName", f"dha run: {job_label(values)}")
        # the kind the UI's experiment-type selector records ("Machine learning"); MLflow
        # 3.17's UI still opens on GenAI pages unless ?workflowType=machine_learning (README)
        MlflowClient().set_experiment_tag(parent.info.experiment_id, *_EXPERIMENT_KIND)
        log_splits(data, data_dir=values["data_dir"])
        ids: dict[str, str] = {}
        for step in STEPS:
            params = {
                name: ids[RUN_ID_PARAMS[name]]
                if name in RUN_ID_PARAMS
                else values.get(name, PARAMS[name].default)
                for name in STEP_PARAMS[step]
            }
            # compare always reruns: the experiment it summarises has changed since last time
            ids[step] = _launch(
                step,
                params,
                parent=parent,
                reuse=values["reuse"] and step != "compare",
                label=job_label(values),
            )
        mlflow.log_dict(ids, "step_runs.json")
        client = MlflowClient()
        measured = client.get_run(ids["measure"]).data.metrics  # the parent shows Table 5 too
        mlflow.log_metrics({k: v for k, v in measured.items() if not k.startswith("ref.")})
        summary = _summary(client, ids["measure"], ids["register"])
        mlflow.set_tag("mlflow.note.content", _description(values, summary))
        print(summary, flush=True)
    sys.stdout.flush()
