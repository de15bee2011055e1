"""derive: the standalone child network with its trained weights, evaluated on the test split.

Reads the child that search_train ended with (``trained/`` of ``--search-run-id``), rebuilds
it from its architecture JSON (the same builder as for published architectures), evaluates
top-1/top-5 on the held-out test split through the deployable path (normalisation + child,
no augmentation) and logs child/{architecture.json, weights.pt, meta.json} and a picture of
the architecture (child/architecture.png).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import mlflow
import torch

from dha_train.data import load_dataset
from dha_train.spaces import draw_architecture
from export.wrap import deployable
from pipeline.artifacts import load_derived, log_derived
from pipeline.class_report import class_report, confusion_figure, predict_split
from pipeline.outputs import STEP_OUTPUTS, output_uri
from pipeline.params import STEP_PARAMS, add_params, parse_values
from pipeline.runs import step_run

__all__ = ["add_arguments", "run"]

CHILD = STEP_OUTPUTS["derive"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params(parser, STEP_PARAMS["derive"])


def run(args: argparse.Namespace) -> None:
    values = parse_values(args, STEP_PARAMS["derive"])
    with step_run("derive", values) as active:
        trained = load_derived(values["search_run_id"], step="search_train")
        record = trained.record
        data = load_dataset(record.dataset, record.data_dir or None, record.resolution, record.seed)
        device = torch.device(values["target_device"])
        model = deployable(trained.model, record.mean, record.std).to(device).eval()
        logits, labels = predict_split(
            model, data.test, batch_size=128, workers=values["workers"], device=device
        )
        report = class_report(logits, labels, data.class_names)
        top1, top5 = report.top1, report.top5
        mlflow.log_metrics({"top1": top1, "top5": top5, "test_loss": report.loss})
        mlflow.log_dict(report.to_dict(), f"{CHILD}/per_class.json")
        mlflow.log_figure(confusion_figure(report), f"{CHILD}/confusion_matrix.png")
        log_derived(
            trained.arch, trained.model, replace(record, top1=top1, top5=top5), step="derive"
        )
        figure = draw_architecture(trained.arch)
        mlflow.log_figure(figure, f"{CHILD}/architecture.png")
        print(
            f"[derive] run {active.info.run_id}: test top-1 {top1:.2f}%, top-5 {top5:.2f}% "
            f"({len(data.test)} images); child at {output_uri('derive', active.info.run_id)}",
            flush=True,
        )
