"""export: deployable files with parity gates, logged as MLflow models.

Reads the child of ``--derive-run-id``; wraps it with its input normalisation (deployed models
take RGB in [0, 1], shaped (N, 3, R, R)); exports ONNX (one file, dynamic batch, checked) and
gates it on real validation images against PyTorch (fp32: >= 99.9% top-1 agreement, max abs
logit difference <= 1e-3). Where TensorRT and CUDA are present, also builds an engine at
``--precision`` and gates it the same way (fp16: >= 99% agreement); where they are not, the
run is tagged ``tensorrt: skipped (<reason>)``, unless TensorRT was asked for alone. A failed
gate fails the step, so nothing is registered. Writes exported.json: format -> models:/ URI.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mlflow
import torch

from dha_train.data import load_dataset, to_unit_float
from export.errors import TensorRTUnavailableError
from export.flavors import log_onnx_model, log_tensorrt_model
from export.onnx_export import check_onnx_parity, export_onnx
from export.tensorrt_engine import (
    TensorRTRunner,
    build_engine,
    check_engine_parity,
    tensorrt_status,
)
from export.wrap import deployable
from pipeline.artifacts import DerivedModel, load_derived
from pipeline.params import STEP_PARAMS, add_params, parse_formats, parse_values
from pipeline.runs import step_run

__all__ = ["add_arguments", "run", "parity_images"]

PARITY_IMAGES = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params(parser, STEP_PARAMS["export"])


def parity_images(derived: DerivedModel, limit: int = PARITY_IMAGES) -> torch.Tensor:
    """Up to ``limit`` real validation images of the child's dataset, [0, 1] RGB."""
    meta = derived.meta
    data = load_dataset(meta["dataset"], meta["data_dir"] or None, derived.resolution, meta["seed"])
    count = min(limit, len(data.val))  # type: ignore[arg-type]
    return to_unit_float(torch.stack([data.val[i][0] for i in range(count)]))


def _tensorrt(
    model: torch.nn.Module,
    onnx_path: Path,
    derived: DerivedModel,
    images: torch.Tensor,
    precision: str,
    work: Path,
) -> str:
    """Build, gate and log the engine; return its model URI."""
    engine = build_engine(
        onnx_path,
        work / "tensorrt",
        precision=precision,
        resolution=derived.resolution,
        timing_cache_path=work / "timing.cache",
    )
    report = check_engine_parity(model, TensorRTRunner(engine.plan), images, strict=True)
    mlflow.log_metrics(report.metrics(f"parity.tensorrt_{precision}"))
    info = log_tensorrt_model(
        engine, name="tensorrt", class_names=derived.class_names, resolution=derived.resolution
    )
    mlflow.set_tag("tensorrt", f"built ({precision})")
    return info.model_uri


def run(args: argparse.Namespace) -> None:
    values = parse_values(args, STEP_PARAMS["export"])
    formats = parse_formats(values["formats"])
    with step_run("export", values) as active, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        derived = load_derived(values["derive_run_id"])
        model = deployable(derived.model, derived.meta["mean"], derived.meta["std"]).eval()
        images = parity_images(derived)
        onnx_path = export_onnx(model, resolution=derived.resolution, path=work / "model.onnx")
        report = check_onnx_parity(model, onnx_path, images, strict=True)
        mlflow.log_metrics(report.metrics("parity.onnx"))
        exported: dict[str, str] = {}
        skipped: dict[str, str] = {}
        if "onnx" in formats:
            exported["onnx"] = log_onnx_model(
                onnx_path,
                name="onnx",
                class_names=derived.class_names,
                resolution=derived.resolution,
            ).model_uri
        if "tensorrt" in formats:
            available, reason = tensorrt_status()
            if available:
                exported["tensorrt"] = _tensorrt(
                    model, onnx_path, derived, images, values["precision"], work
                )
            elif formats == ("tensorrt",):
                raise TensorRTUnavailableError(
                    f"formats=tensorrt but TensorRT is unavailable ({reason}): add onnx or run "
                    "on a CUDA machine with TensorRT"
                )
            else:
                skipped["tensorrt"] = reason
                mlflow.set_tag("tensorrt", f"skipped ({reason})")
                print(f"[export] tensorrt: skipped ({reason})", flush=True)
        mlflow.log_dict(
            {"models": exported, "skipped": skipped, "parity": {"onnx": report.to_dict()}},
            "exported.json",
        )
        for fmt, uri in exported.items():
            print(f"[export] {fmt}: {uri} (run {active.info.run_id})", flush=True)
