"""measure: params, multiply-adds and latency of a model, and the paper's Table 5 on this machine.

Two ways in:
- as the pipeline's step (``--derive-run-id``): the derived child of that run, plus the
  reference architectures (``--references``) timed on the same device in the same run; logs
  table5/table5.{md,csv,json}, the JSON reports and the metrics ``params_m``, ``flops_m``,
  ``top1``, ``top5``, ``latency_ms.<backend>.<device>.bs<N>`` to its MLflow run;
- on its own (``--arch``): a named architecture (proxylessnas_gpu, darts_v2),
  ``torchvision:<name>`` or an architecture JSON (``--weights`` for its state dict); prints a
  report (``--json``: one JSON object, schema in pipeline/measurement.py) and logs nothing.

Example: dha measure --arch proxylessnas_gpu --resolution 224 --num-classes 1000 --json
"""

from __future__ import annotations

import argparse
import json
import logging

import mlflow

from dha_train.errors import ConfigError
from pipeline.artifacts import DerivedModel, load_derived
from pipeline.latency import BACKENDS, LatencyConfig, validate_choices
from pipeline.measurement import MeasureReport, measure_model, measure_target, resolve_target
from pipeline.params import PARAMS, STEP_PARAMS, add_params, parse_values
from pipeline.runs import step_run
from pipeline.table5 import (
    PAPER_SETTING,
    build_table5,
    log_table5,
    measure_references,
    table5_metrics,
)

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)

DRIFT_FLAG_PCT = 10.0  # a timing whose chunk medians moved more than this is flagged as noisy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params(parser, STEP_PARAMS["measure"])
    own = parser.add_argument_group("standalone measurement (no MLflow run)")
    own.add_argument(
        "--arch",
        default="",
        help="named architecture, torchvision:<name> or an architecture JSON path",
    )
    own.add_argument("--weights", default=None, help="state dict for --arch JSON")
    own.add_argument("--resolution", type=int, default=224, help="input side in px (default 224)")
    own.add_argument("--num-classes", type=int, default=1000, help="classes (default 1000)")
    own.add_argument(
        "--backends",
        default="torch,onnxruntime",
        help=f"comma-separated subset of {','.join(BACKENDS)}; '' = no timing",
    )
    own.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    own.add_argument("--max-seconds", type=float, default=2.0, help="time bound per configuration")
    own.add_argument("--json", action="store_true", help="print one JSON object")


def _backends(raw: str) -> tuple[str, ...]:
    return validate_choices(
        [b.strip() for b in raw.split(",") if b.strip()], list(BACKENDS), "backend"
    )


def _describe(report: MeasureReport) -> str:
    lines = [
        f"{report.name}: {report.params_m:.3f} M params, {report.flops_m:.1f} M multiply-adds "
        f"at {report.resolution} px"
    ]
    if report.unsupported_operators:
        lines.append(f"  not counted by fvcore: {report.unsupported_operators}")
    for r in report.latency:
        if r.timing is None:
            lines.append(f"  {r.key}: {r.status} ({r.reason})")
        else:
            drift = r.timing.drift_pct
            noisy = (
                f"; drift {drift:.0f}%: the machine's speed changed while timing, rerun with "
                "--threads 1 --max-seconds 20"
                if drift > DRIFT_FLAG_PCT
                else ""
            )
            lines.append(
                f"  {r.key}: median {r.timing.median_ms:.2f} ms, p90 {r.timing.p90_ms:.2f} ms, "
                f"{r.throughput_ips:.0f} img/s{noisy}"
            )
    return "\n".join(lines)


def _check_standalone(args: argparse.Namespace) -> None:
    """Flags of a standalone measurement that no measurement could use."""
    for flag, value, least in (
        ("--resolution", args.resolution, 8),
        ("--num-classes", args.num_classes, 1),
        ("--threads", args.threads, 1),
    ):
        if value is not None and value < least:
            raise ConfigError(f"{flag} {value}: must be at least {least}")
    if args.max_seconds <= 0:
        raise ConfigError(f"--max-seconds {args.max_seconds}: give a time bound above 0 s")
    if args.weights and not args.arch.endswith(".json"):
        raise ConfigError("--weights goes with an architecture JSON: --arch <arch.json>")


def _all_skipped(report: MeasureReport) -> None:
    """A UserError when timings were asked for and none could run here."""
    if report.latency and all(r.timing is None for r in report.latency):
        reasons = "; ".join(f"{r.key}: {r.reason}" for r in report.latency[:3])
        raise ConfigError(
            f"no timing could run on this machine ({reasons}): choose --backends and "
            "--target-device that it has"
        )


def _standalone(args: argparse.Namespace, values: dict) -> None:
    _check_standalone(args)
    target = resolve_target(
        args.arch, num_classes=args.num_classes, resolution=args.resolution, weights=args.weights
    )
    report = measure_target(
        target,
        backends=_backends(args.backends),
        devices=(values["target_device"],),
        batch_sizes=(1, values["batch_size"]),
        threads=args.threads,
        timing=LatencyConfig(max_seconds=args.max_seconds),
    )
    print(report.to_json() if args.json else _describe(report), flush=True)
    _all_skipped(report)


def _step(args: argparse.Namespace, values: dict) -> None:
    device = values["target_device"]
    references = [r.strip() for r in values["references"].split(",") if r.strip()]
    with step_run("measure", values) as active:
        derived: DerivedModel = load_derived(values["derive_run_id"])
        mlflow.set_tags({f"dha.{k}": v for k, v in derived.descriptive_tags().items()})
        report = measure_model(
            derived.model,
            resolution=derived.resolution,
            num_classes=derived.num_classes,
            backends=_backends(args.backends),
            devices=(device,),
            batch_sizes=(1, values["batch_size"]),
            threads=args.threads,
            name="derived",
            kind="arch",
            space=derived.space,
            source=f"runs:/{values['derive_run_id']}",
        )
        options = {"devices": (device,), "backends": _backends(args.backends)}
        refs = measure_references(references, threads=args.threads, **options)
        # ... and at the run's own input and class count: the like-for-like latency
        here = (derived.resolution, derived.num_classes)
        if here != PAPER_SETTING:
            refs |= measure_references(
                references,
                resolution=here[0],
                num_classes=here[1],
                threads=args.threads,
                **options,
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


def run(args: argparse.Namespace) -> None:
    values = parse_values(args, STEP_PARAMS["measure"])
    if args.arch and values["derive_run_id"]:
        raise ConfigError(
            "pass either --arch (standalone) or --derive-run-id (pipeline step), not both"
        )
    if not args.arch and not values["derive_run_id"]:
        raise ConfigError(
            f"nothing to measure: pass --arch <name|torchvision:<name>|arch.json> or "
            f"{PARAMS['derive_run_id'].flag} <run id>"
        )
    (_standalone if args.arch else _step)(args, values)
