"""register: one registered model per format, with version tags and aliases.

Reads exported.json of ``--export-run-id`` and the Table 5 metrics of ``--measure-run-id``.
Names follow ``<prefix>-<space>-<dataset>-<format>`` (prefix ``--model-name``, default
``dha``). Each version carries tags (run ids, dataset, space, mode, top-1/top-5, params,
FLOPs, latency with its device, budgets, TensorRT/GPU info); ``champion`` moves only to a
more accurate version within the same budgets. Writes registered.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dha_train.errors import UserError
from export.registry import CHAMPION, LATEST, register_model_version, registered_name
from pipeline.params import STEP_PARAMS, add_params, parse_values
from pipeline.run_ids import resolve_run_id
from pipeline.runs import step_run

__all__ = ["add_arguments", "run"]

_METRICS = ("top1", "top5", "params_m", "flops_m")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params(parser, STEP_PARAMS["register"])


def _version_tags(export_run_id: str, measure: mlflow.entities.Run) -> dict[str, str]:
    tags = {"export_run_id": export_run_id, "measure_run_id": measure.info.run_id}
    tags |= {
        k.removeprefix("dha."): v
        for k, v in measure.data.tags.items()
        if k.startswith("dha.") and k not in ("dha.step", "dha.code_version")
    }
    tags |= {k: f"{measure.data.metrics[k]:.4f}" for k in _METRICS if k in measure.data.metrics}
    for key, value in measure.data.metrics.items():
        if key.startswith("latency_ms.") and key.endswith(".bs1"):
            device = key.split(".")[2]
            name = measure.data.tags.get(f"dha.device_name.{device}", device)
            tags[key] = f"{value:.3f} ms on {name}"
    return tags


def _description(fmt: str, tags: dict[str, str], budgets: dict[str, float | None]) -> str:
    """The model version's description: what it is, what it scored, what it costs."""
    latency = "; ".join(f"{k}: {v}" for k, v in tags.items() if k.startswith("latency_ms."))
    limits = ", ".join(f"{k} <= {v}" for k, v in budgets.items() if v is not None) or "none"
    return (
        f"{fmt} model of the child network DHA ({tags.get('mode', '?')}) derived from the "
        f"{tags.get('space', '?')} space on {tags.get('dataset', '?')}. Test top-1 "
        f"{tags.get('top1', '?')}%, top-5 {tags.get('top5', '?')}%; {tags.get('params_m', '?')} M "
        f"params, {tags.get('flops_m', '?')} M multiply-adds; {latency or 'latency not measured'}."
        f" Budget: {limits}. Input float32 RGB in [0, 1], (N, 3, R, R); output logits. "
        f"Runs: export {tags['export_run_id']}, measure {tags['measure_run_id']}."
    )


def run(args: argparse.Namespace) -> None:
    values = parse_values(args, STEP_PARAMS["register"])
    with step_run("register", values) as active:
        client = MlflowClient()
        export_id = resolve_run_id(client, values["export_run_id"], what="export run")
        try:
            exported = json.loads(
                Path(client.download_artifacts(export_id, "exported.json")).read_text()
            )
        except MlflowException:
            raise UserError(
                f"run {export_id} has no exported.json: pass the id of a FINISHED export step"
            ) from None
        measure = client.get_run(
            resolve_run_id(client, values["measure_run_id"], what="measure run")
        )
        tags = _version_tags(export_id, measure)
        export_tags = client.get_run(export_id).data.tags
        budgets = {
            k: (float(tags[k]) if tags.get(k) else None)
            for k in ("max_params_m", "max_flops_m", "max_latency_ms")
        }
        versions = []
        for fmt, uri in exported["models"].items():
            name = registered_name(
                tags["space"], tags["dataset"], fmt, prefix=values["model_name"] or None
            )
            extra = {"format": fmt, "tensorrt": export_tags.get("tensorrt", "")}
            registered = register_model_version(uri, name=name, tags=tags | extra, budgets=budgets)
            client.update_model_version(
                name, registered.version, description=_description(fmt, tags, budgets)
            )
            alias = CHAMPION if CHAMPION in registered.aliases else LATEST
            versions.append(
                {
                    "format": fmt,
                    "name": name,
                    "version": registered.version,
                    "aliases": list(registered.aliases),
                    "uri": registered.alias_uri(alias),
                    "champion": registered.champion_reason,
                }
            )
            print(
                f"[register] {registered.alias_uri(alias)} = version {registered.version} "
                f"({registered.champion_reason})",
                flush=True,
            )
        skipped = [{"format": f, "reason": r} for f, r in exported.get("skipped", {}).items()]
        mlflow.log_dict({"versions": versions, "skipped": skipped}, "registered.json")
        print(
            f"[register] run {active.info.run_id}: {len(versions)} versions registered", flush=True
        )
