"""search_train: DHA's one-stage search and training (Algorithm 1; other modes: Table 3).

Reads the dataset; trains the supernet while searching DA policy, lr/wd and architecture
under the budgets; ends with the derived child and its trained weights, which it evaluates
on the held-out test split through the deployable path (input normalisation + child, no
augmentation, float32). Writes to its run: per-epoch metrics, architecture.json, the
DA-policy heatmap, the architecture's evolution, the lr/wd trajectories, the final
checkpoint (checkpoints/) and its output, the child (child/: architecture.json, weights.pt,
meta.json with the test top-1/top-5, per_class.json, confusion_matrix.png, architecture.png).

Checkpoints belong to the step's run: they go to ``$DHA_CHECKPOINT_DIR/<key>/<owner>``
(default ``./outputs/search_train``), where key hashes the parameters (but not nproc) and
code, and owner the tracking store, experiment and run id (recorded in owner.json). A rerun
of an interrupted run (killed, or FAILED) with the same parameters in the same store
continues that run, from its last checkpoint and on any number of processes; every other run
trains afresh.

With ``--nproc N`` (N > 1) outside torchrun, this process owns the MLflow run and re-launches
the step under ``torchrun --standalone --nproc-per-node N``, one process per GPU (or N CPU
processes); inside torchrun (LOCAL_RANK set) every process trains its shard, rank 0 alone
logs to the run (MLFLOW_RUN_ID) and writes checkpoints. Multi-node: start ``torchrun`` with
its rendezvous options on every node yourself (README).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import mlflow
import torch

from dha_train.data import DataBundle, load_dataset
from dha_train.datasets import DatasetDefaults, dataset_entry
from dha_train.engine import distributed
from dha_train.engine.checkpoint import claim_workdir, has_checkpoint, owner_workdir
from dha_train.engine.sink import NullSink
from dha_train.engine.trainer import train
from dha_train.errors import ConfigError
from dha_train.nas.budgets import Budget
from dha_train.nas.cost_model import CostModel
from dha_train.nas.latency_runtimes import deployment_runtime, latency_runtime, runtime_threads
from dha_train.spaces import baseline_architecture, draw_architecture, validate_architecture
from dha_train.spaces.arch import Architecture
from dha_train.spaces.base import SpaceConfig
from dha_train.train_config import TrainConfig
from export.tensorrt_runtime import tensorrt_status
from export.wrap import deployable
from pipeline.artifacts import (
    ChildRecord,
    given_architecture_id,
    load_given_architecture,
    log_derived,
)
from pipeline.class_report import log_test_report
from pipeline.dataset_inputs import log_splits
from pipeline.outputs import STEP_OUTPUTS, output_uri
from pipeline.params import PARAMS, STEP_PARAMS, add_params, parse_formats, parse_values
from pipeline.runs import (
    code_version,
    default_tracking_uri,
    find_resumable_run,
    reopen_run,
    step_run,
)
from pipeline.sink import MlflowSink

__all__ = [
    "add_arguments",
    "run",
    "preflight",
    "resolve",
    "space_config",
    "budget_of",
    "latency_runtime_of",
    "cost_model_of",
    "train_config",
    "checkpoint_root",
    "resumable",
]

log = logging.getLogger(__name__)
CHILD = STEP_OUTPUTS["search_train"]
CHECKPOINT_DIR_ENV = "DHA_CHECKPOINT_DIR"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params(parser, STEP_PARAMS["search_train"])
    parser.add_argument("--limit-steps-per-epoch", type=int, default=None, help=argparse.SUPPRESS)


def resolve(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the dataset's defaults filled in where a parameter is 0."""
    defaults = asdict(dataset_entry(values["dataset"]).defaults)
    return {**values, **{k: defaults[k] for k in defaults if not values.get(k)}}


def space_config(values: dict[str, Any], num_classes: int) -> SpaceConfig:
    v = resolve(values)
    return SpaceConfig(
        space=v["space"],
        num_classes=num_classes,
        resolution=int(v["resolution"]),
        width_mult=float(v["width_mult"]),
        init_channels=int(v["init_channels"]),
        layers=int(v["layers"]),
    )


def budget_of(values: dict[str, Any]) -> Budget:
    return Budget(
        max_params_m=values["max_params_m"],
        max_flops_m=values["max_flops_m"],
        max_latency_ms=values["max_latency_ms"],
    )


def latency_runtime_of(values: dict[str, Any]) -> str | None:
    """The runtime that times a latency budget: the one the model is deployed with on
    ``target_device`` (ONNX Runtime on the CPU; TensorRT on CUDA when importable, else ONNX
    Runtime's CUDA provider); None without a latency budget."""
    if values["max_latency_ms"] is None:
        return None
    return deployment_runtime(values["target_device"])


def cost_model_of(values: dict[str, Any], num_classes: int) -> CostModel:
    """The cost model of the budgets (a latency table only with a latency budget)."""
    v = resolve(values)
    runtime = latency_runtime_of(v)
    return CostModel.from_config(
        space_config(v, num_classes),
        latency_device=v["target_device"] if runtime is not None else None,
        latency_runtime=runtime,
    )


def train_config(
    v: dict[str, Any],
    data: DataBundle,
    ctx: distributed.DistContext | None = None,
    *,
    limit_steps_per_epoch: int | None = None,
) -> TrainConfig:
    """The validated TrainConfig of resolved parameters ``v`` (ConfigError if inconsistent)."""
    cfg = TrainConfig(
        space=space_config(v, data.num_classes),
        mode=v["mode"],
        epochs=int(v["epochs"]),
        batch_size=v["batch_size"],
        seed=v["seed"],
        tau_lr=v["tau_lr"] or None,
        hyper_lr=v["hyper_lr"],
        lr_bounds=(v["lr_min"], v["lr_max"]),
        wd_bounds=(v["wd_min"], v["wd_max"]),
        freeze_rule=v["freeze_rule"],
        arch_weighting=v["arch_weighting"],
        architecture=load_given_architecture(v["architecture"]),
        budget=budget_of(v),
        latency_runtime=latency_runtime_of(v),
        device=ctx.device if ctx is not None else v["target_device"],
        workers=v["workers"],
        limit_steps_per_epoch=limit_steps_per_epoch,
        rank=ctx.rank if ctx is not None else 0,
        world_size=ctx.world_size if ctx is not None else 1,
    )
    return cfg


def _device(values: dict[str, Any]) -> str:
    if values["target_device"] == "cuda" and not torch.cuda.is_available():
        raise ConfigError("target_device=cuda but no CUDA device is visible: use target_device=cpu")
    return str(values["target_device"])


def preflight(values: dict[str, Any], *, formats: str | None = None) -> DataBundle:
    """Everything that can be wrong with the input, checked before any run starts."""
    v = resolve(values)
    _device(v)
    if formats is not None and parse_formats(formats) == ("tensorrt",):
        available, reason = tensorrt_status()
        if not available:
            raise ConfigError(
                f"formats=tensorrt asked for TensorRT alone, but TensorRT is "
                f"unavailable ({reason}): add onnx or run on a CUDA machine"
            )
    data = load_dataset(v["dataset"], v["data_dir"] or None, int(v["resolution"]), v["seed"])
    train_config(v, data)  # the search settings agree with each other
    validate_architecture(baseline_architecture(space_config(v, data.num_classes)))  # sizes
    budget = budget_of(v)
    if any(x is not None for x in vars(budget).values()):
        cost_model_of(v, data.num_classes).check_budget(budget)
    return data


def checkpoint_root() -> Path:
    """$DHA_CHECKPOINT_DIR, else ./outputs/search_train (absolute, for step processes)."""
    return Path(os.environ.get(CHECKPOINT_DIR_ENV) or Path("outputs") / "search_train").resolve()


def _key(values: dict[str, Any]) -> str:
    keyed = {k: v for k, v in values.items() if k != "nproc"}  # resume on any number of ranks
    text = json.dumps({**keyed, "code": code_version()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _owner(run: mlflow.entities.Run) -> dict[str, str]:
    return {
        "tracking_uri": default_tracking_uri(),
        "experiment_id": run.info.experiment_id,
        "run_id": run.info.run_id,
    }


def resumable(values: dict[str, Any]) -> Callable[[mlflow.entities.Run], bool]:
    """A test for :func:`find_resumable_run`: does a run of ``values`` have a checkpoint?"""
    return lambda run: has_checkpoint(owner_workdir(checkpoint_root(), _key(values), _owner(run)))


def _continue_interrupted(values: dict[str, Any]) -> None:
    """Run by hand (no run given): attach to an interrupted run of these values, if any."""
    if os.environ.get("MLFLOW_RUN_ID") or mlflow.active_run() is not None:
        return
    mlflow.set_tracking_uri(default_tracking_uri())
    experiment_id = mlflow.tracking.fluent._get_experiment_id()
    found = find_resumable_run("search_train", values, experiment_id, resumable(values))
    if found is not None:
        reopen_run(found.info.run_id)
        os.environ["MLFLOW_RUN_ID"] = found.info.run_id
        print(f"[search_train] continuing interrupted run {found.info.run_id}", flush=True)


def _launch_torchrun(args: argparse.Namespace, values: dict[str, Any]) -> None:
    """Own the MLflow run and run this step under torchrun; a failed rank fails the run."""
    nproc = int(values["nproc"])
    v = resolve(values)
    if _device(v) == "cuda" and nproc > torch.cuda.device_count():
        raise ConfigError(
            f"nproc={nproc} but {torch.cuda.device_count()} CUDA device(s) are visible: give "
            "at most one process per GPU"
        )
    preflight(values)  # bad input fails here once, not in every rank
    argv = ["search-train"]  # nproc left out: torchrun's parser takes --nproc for its own
    for name in STEP_PARAMS["search_train"]:
        if name != "nproc":
            argv += [PARAMS[name].flag, str(getattr(args, name))]
    if args.limit_steps_per_epoch is not None:
        argv += ["--limit-steps-per-epoch", str(args.limit_steps_per_epoch)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={nproc}", "-m", "pipeline.cli", *argv]
    with step_run("search_train", values) as active:
        env = {
            **os.environ,
            "MLFLOW_RUN_ID": active.info.run_id,
            "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),  # the ranks attach to this run
        }
        log.info("launching %d processes: %s", nproc, " ".join(cmd))
        code = subprocess.run(cmd, env=env, check=False).returncode
        if code != 0:
            log.error("search_train failed in torchrun (exit status %d)", code)
            raise SystemExit(code)  # step_run marks the run FAILED


def run(args: argparse.Namespace) -> None:
    values = parse_values(args, STEP_PARAMS["search_train"])
    values["architecture"] = given_architecture_id(values["architecture"])
    if not distributed.inside_torchrun():
        _continue_interrupted(values)
    if values["nproc"] > 1 and not distributed.inside_torchrun():
        _launch_torchrun(args, values)
        return
    ctx = distributed.setup(_device(resolve(values)))
    try:
        _run_rank(args, values, ctx)
    finally:
        distributed.teardown()


def _log_latency_runtime(v: dict[str, Any]) -> None:
    """Print and tag the runtime that times the latency budget (nothing without one)."""
    name = latency_runtime_of(v)
    if name is None:
        return
    device = torch.device(v["target_device"])
    runtime = latency_runtime(name)
    threads = runtime_threads(device)
    mlflow.set_tags(
        {
            "latency.runtime": name,
            "latency.runtime_version": runtime.version(),
            "latency.device": device.type,
            "latency.threads": "" if threads is None else str(threads),
        }
    )
    where = f"{device.type}" + ("" if threads is None else f", {threads} threads")
    print(
        f"[search_train] max_latency_ms={v['max_latency_ms']:g}: batch-1 latency through "
        f"{name} {runtime.version()} on {where} (the deployed model's runtime)",
        flush=True,
    )


def _log_latency_check(v: dict[str, Any], num_classes: int, arch: Architecture) -> None:
    """The table's prediction for the derived child beside a measurement of the whole child
    through the same runtime, and the relative error (metrics ``latency.*``)."""
    check = cost_model_of(v, num_classes).latency_check(arch)
    mlflow.log_metrics(check.metrics())
    print(
        f"[search_train] latency of the derived child through {check.runtime}: table "
        f"{check.predicted_ms:.4f} ms, measured {check.measured_ms:.4f} ms (relative error "
        f"{100 * check.relative_error:.1f}%)",
        flush=True,
    )


def _run_rank(
    args: argparse.Namespace, values: dict[str, Any], ctx: distributed.DistContext
) -> None:
    """Train on this process (rank ``ctx.rank`` of ``ctx.world_size``)."""
    data = preflight(values)
    v = resolve(values)
    cfg = train_config(v, data, ctx, limit_steps_per_epoch=args.limit_steps_per_epoch)
    if ctx.rank != 0:  # only rank 0 touches MLflow (it attaches to MLFLOW_RUN_ID)
        logging.getLogger("dha_train").setLevel(logging.WARNING)  # rank 0 reports progress
        workdir = distributed.broadcast_object(None)
        train(cfg, data, workdir=workdir, sink=NullSink(), resume=True, evaluate_test=False)
        return
    with step_run("search_train", values) as active:
        workdir = claim_workdir(checkpoint_root(), _key(values), _owner(active))
        distributed.broadcast_object(workdir)
        mlflow.log_params({"resolved." + f.name: v[f.name] for f in fields(DatasetDefaults)})
        mlflow.log_dict(
            {
                "sizes": data.sizes(),
                "skipped_unreadable": data.skipped,
                "skipped_non_image": data.skipped_non_image,
                "classes": data.class_names,
            },
            "data.json",
        )
        skipped = {"unreadable": data.skipped, "non_image": data.skipped_non_image}
        mlflow.log_params({f"data.skipped_{k}": n for k, n in skipped.items()})
        log_splits(data, data_dir=v["data_dir"])
        _log_latency_runtime(v)
        result = train(
            cfg, data, workdir=workdir, sink=MlflowSink(), resume=True, evaluate_test=False
        )
        mlflow.log_artifacts(str(workdir), "checkpoints")
        if cfg.latency_runtime is not None:
            _log_latency_check(v, data.num_classes, result.architecture)
        report = log_test_report(
            deployable(result.model, data.mean, data.std).to(cfg.device).eval(),
            data.test,
            data.class_names,
            folder=CHILD,
            workers=cfg.workers,
            device=torch.device(cfg.device),
        )
        record = ChildRecord(
            dataset=v["dataset"],
            data_dir=v["data_dir"],
            seed=v["seed"],
            mode=v["mode"],
            space=cfg.space.space,
            resolution=cfg.space.resolution,
            num_classes=data.num_classes,
            class_names=tuple(data.class_names),
            mean=tuple(data.mean),
            std=tuple(data.std),
            search_run_id=active.info.run_id,
            max_params_m=v["max_params_m"],
            max_flops_m=v["max_flops_m"],
            max_latency_ms=v["max_latency_ms"],
            top1=report.top1,  # percent, as every accuracy
            top5=report.top5,
        )
        log_derived(result.architecture, result.model, record)
        mlflow.log_figure(draw_architecture(result.architecture), f"{CHILD}/architecture.png")
        print(
            f"[search_train] run {active.info.run_id}: test top-1 {report.top1:.2f}%, top-5 "
            f"{report.top5:.2f}% ({len(data.test)} images) with {result.architecture.space} "
            f"architecture; child at {output_uri('search_train', active.info.run_id)}",
            flush=True,
        )
