"""measure: the paper's Table 5 on this machine, for the derived child of a search_train run.

Times the child of ``--search-run-id`` (params, multiply-adds, latency with each
``--backends`` entry on ``--target-device`` at batch 1 and ``--batch-size``) beside the
reference architectures (``--references``), at the paper's setting and at the run's own
input size and class count. Logs table5/table5.{md,csv,json}, the JSON reports, the metrics
``params_m``, ``flops_m``, ``top1``, ``top5``, ``latency_ms.<backend>.<device>.bs<N>`` and
the ``dha.*`` tags to its MLflow run. Timings use all CPU threads and about 2 s per
configuration, so a run stays short; for medians that repeat on a shared machine, time one
architecture outside a run with ``dha profile --threads 1 --max-seconds 20``.
"""

from __future__ import annotations

import argparse
import json

import mlflow

from pipeline.artifacts import DerivedModel, load_derived, search_run_id
from pipeline.backends import parse_backends
from pipeline.measurement import measure_model
from pipeline.params import STEP_PARAMS, add_params, parse_values
from pipeline.runs import step_run
from pipeline.table5 import (
    PAPER_SETTING,
    build_table5,
    log_table5,
    measure_references,
    parse_references,
    table5_metrics,
)

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params(parser, STEP_PARAMS["measure"])


def run(args: argparse.Namespace) -> None:
    values = parse_values(args, STEP_PARAMS["measure"])
    device = values["target_device"]
    backends = parse_backends(values["backends"])
    search_run = search_run_id(values["search_run_id"])
    references = parse_references(values["references"])
    with step_run("measure", values) as active:
        derived: DerivedModel = load_derived(search_run)
        mlflow.set_tags({f"dha.{k}": v for k, v in derived.descriptive_tags().items()})
        report = measure_model(
            derived.model,
            resolution=derived.resolution,
            num_classes=derived.num_classes,
            backends=backends,
            devices=(device,),
            batch_sizes=(1, values["batch_size"]),
            name="derived",
            kind="arch",
            space=derived.space,
            source=f"runs:/{search_run}",
        )
        options = {"devices": (device,), "backends": backends}
        refs = measure_references(references, **options)
        # ... and at the run's own input and class count: the like-for-like latency
        here = (derived.resolution, derived.num_classes)
        if here != PAPER_SETTING:
            refs |= measure_references(
                references, resolution=here[0], num_classes=here[1], **options
            )
        table = build_table5(
            report,
            top1=derived.top1,
            top5=derived.top5,
            references=refs,
            latency_key=f"torch.{device}.bs1",
            dataset=derived.record.dataset,
        )
        metrics = table5_metrics(report, top1=derived.top1, top5=derived.top5, references=refs)
        log_table5(table, metrics, reports={"derived": report, **refs})
        env = report.environment
        names = {"cpu": env.get("cpu"), "cuda": env.get("gpu")}
        mlflow.set_tags({f"dha.device_name.{k}": v for k, v in names.items() if v})
        print(table.to_markdown(), flush=True)
        print(
            f"[measure] Table 5 logged to run {active.info.run_id} (artifacts table5/); "
            f"metrics {json.dumps(sorted(k for k in metrics if not k.startswith('ref.'))[:6])}...",
            flush=True,
        )
