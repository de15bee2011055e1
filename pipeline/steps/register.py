"""register: one registered model per format, all formats of an export run as one unit.

Reads exported.json of ``--export-run-id`` (each format's models:/ URI and its runtime
report: accuracy and batch-1 latency measured through the runtime that serves it) and the
Table 5 metrics of ``--measure-run-id``. Names follow ``<prefix>-<space>-<dataset>-<format>``
(prefix ``--model-name``, default ``dha``). Each version's tags, set when it is created,
describe that format's own artifact: val/test top-1/top-5 and latency (backend, device,
batch, threads) through its runtime, resolution, precision, target device, library
versions, TensorRT version/GPU/compute capability for engines, the ONNX file's sha256,
budgets, and whether it may be champion (``--min-top1``, :mod:`export.champion`).
Registration is atomic and idempotent (:func:`export.registry.register_export`, keyed on the
export run id). A model over its latency budget by more than the tolerance gets a warning
line and the run tag ``dha.latency_budget``. Writes registered.json.
"""

from __future__ import annotations

import argparse
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from export.champion import LATENCY_TOLERANCE, eligibility
from export.flavors import ONNX_SHA256
from export.registry import CHAMPION, LATEST, VersionRequest, register_export, registered_name
from export.runtime_report import RuntimeReport
from pipeline.latency import describe_environment
from pipeline.outputs import STEP_OUTPUTS, read_output_json
from pipeline.params import STEP_PARAMS, add_params, parse_values
from pipeline.run_ids import resolve_run_id
from pipeline.runs import step_run

__all__ = ["add_arguments", "run"]

_METRICS = ("params_m", "flops_m")
_BUDGETS = ("max_params_m", "max_flops_m", "max_latency_ms")
_ENGINE_KEYS = ("tensorrt_version", "gpu_name", "compute_capability", "precision")
BUDGET_RUN_TAG = "dha.latency_budget"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params(parser, STEP_PARAMS["register"])


def _common_tags(export_run_id: str, measure: mlflow.entities.Run, exported: dict) -> dict:
    """Tags every format shares: run ids, what was searched, the architecture's counts."""
    tags = {"export_run_id": export_run_id, "measure_run_id": measure.info.run_id}
    skip = {"dha.step", "dha.code_version", *(f"dha.{k}" for k in _BUDGETS)}
    tags |= {
        k.removeprefix("dha."): v
        for k, v in measure.data.tags.items()
        if k.startswith("dha.") and not k.startswith("dha.device_name.") and k not in skip
    }
    tags |= {k: f"{measure.data.metrics[k]:.4f}" for k in _METRICS if k in measure.data.metrics}
    versions = describe_environment()["versions"]
    tags |= {f"{lib}_version": v for lib in ("torch", "onnxruntime") if (v := versions.get(lib))}
    tags |= {
        "mlflow_version": mlflow.__version__,
        "resolution": str(exported["resolution"]),
        "num_classes": str(exported["num_classes"]),
        "target_device": exported["target_device"],
    }
    return tags


def _format_tags(fmt: str, uri: str, report: RuntimeReport, exported: dict) -> dict[str, str]:
    """What is true of this format's file alone."""
    meta = mlflow.models.get_model_info(uri).metadata or {}
    tags = report.tags() | {"precision": "fp32" if fmt == "onnx" else exported["precision"]}
    if fmt == "onnx" and meta.get(ONNX_SHA256):
        tags[ONNX_SHA256] = meta[ONNX_SHA256]
    tags |= {k: str(meta[k]) for k in _ENGINE_KEYS if fmt == "tensorrt" and k in meta}
    return tags


def _budgets(measure: mlflow.entities.Run) -> dict[str, float | None]:
    raw = {k: measure.data.tags.get(f"dha.{k}", "") for k in _BUDGETS}
    return {k: float(v) if v else None for k, v in raw.items()}


def _warn_latency(fmt: str, report: RuntimeReport, budget: float | None) -> None:
    if budget is None or report.latency_ms <= budget * (1.0 + LATENCY_TOLERANCE):
        return
    message = (
        f"{fmt} runs in {report.latency_ms:.3f} ms at batch 1 through {report.backend} on "
        f"{report.device}, over the budget max_latency_ms={budget:g} by more than "
        f"{LATENCY_TOLERANCE:.0%}; it is registered but cannot be champion"
    )
    mlflow.set_tag(BUDGET_RUN_TAG, f"broken: {message}")
    print(f"[register] WARNING: {message}", flush=True)


def _description(fmt: str, tags: dict[str, str], budgets: dict[str, float | None]) -> str:
    """The model version's description: what it is, what it scored, what it costs."""
    limits = ", ".join(f"{k} <= {v}" for k, v in budgets.items() if v is not None) or "none"
    return (
        f"{fmt} model of the child network that DHA ({tags.get('mode', '?')}) derived from the "
        f"{tags.get('space', '?')} space on {tags.get('dataset', '?')}. Through its runtime: "
        f"validation top-1 {tags.get('val_top1', '?')}%, test top-1 {tags.get('test_top1', '?')}%, "
        f"batch-1 latency {tags.get('latency_ms', '?')} ms; {tags.get('params_m', '?')} M "
        f"params, {tags.get('flops_m', '?')} M multiply-adds. Budget: {limits}. Input float32 "
        f"RGB in [0, 1], (N, 3, R, R) with R = {tags.get('resolution', '?')}; output logits. "
        f"Runs: export {tags['export_run_id']}, measure {tags['measure_run_id']}."
    )


def _requests(values: dict[str, Any], client: MlflowClient) -> tuple[list, dict, dict]:
    export_id = resolve_run_id(client, values["export_run_id"], what="export run")
    exported = read_output_json("export", export_id)
    measure = client.get_run(resolve_run_id(client, values["measure_run_id"], what="measure run"))
    values["export_run_id"] = export_id  # the registration key is the full id
    common = _common_tags(export_id, measure, exported)
    budgets = _budgets(measure)
    requests = []
    for fmt, uri in exported["models"].items():
        report = RuntimeReport.from_dict(exported["runtime"][fmt])
        _warn_latency(fmt, report, budgets["max_latency_ms"])
        allowed = eligibility(
            val_top1=report.val_top1,
            num_classes=int(exported["num_classes"]),
            min_top1=values["min_top1"],
            latency_ms=report.latency_ms,
            max_latency_ms=budgets["max_latency_ms"],
        )
        tags = common | _format_tags(fmt, uri, report, exported) | allowed.tags()
        name = registered_name(
            common["space"], common["dataset"], fmt, prefix=values["model_name"] or None
        )
        requests.append(VersionRequest(fmt, name, uri, tags, _description(fmt, tags, budgets)))
    return requests, budgets, exported


def run(args: argparse.Namespace) -> None:
    values = parse_values(args, STEP_PARAMS["register"])
    with step_run("register", values) as active:
        client = MlflowClient()
        requests, budgets, exported = _requests(values, client)
        registered = register_export(requests, key=values["export_run_id"], budgets=budgets)
        versions = []
        for request, version in zip(requests, registered, strict=True):
            holds = CHAMPION in version.aliases
            uri = version.alias_uri(CHAMPION) if holds else version.model_uri
            versions.append(
                {
                    "format": request.fmt,
                    "name": version.name,
                    "version": version.version,
                    "aliases": list(version.aliases),
                    "uri": uri,
                    "champion": version.champion_reason,
                    "created": version.created,
                }
            )
            state = "champion" if holds else "registered without champion"
            again = "" if version.created else " (already registered by this export run)"
            print(
                f"[register] {uri} = version {version.version}{again}, {state}: "
                f"{version.champion_reason}",
                flush=True,
            )
        skipped = [{"format": f, "reason": r} for f, r in exported.get("skipped", {}).items()]
        mlflow.log_dict({"versions": versions, "skipped": skipped}, STEP_OUTPUTS["register"])
        created = sum(v["created"] for v in versions)
        print(
            f"[register] run {active.info.run_id}: {created} of {len(versions)} versions "
            f"created; '{LATEST}' resolves to the newest",
            flush=True,
        )
