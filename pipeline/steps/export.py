"""export: deployable files with parity gates, logged as MLflow models, measured as deployed.

Reads the child of ``--derive-run-id``; wraps it with its input normalisation (deployed models
take RGB in [0, 1], shaped (N, 3, R, R)); exports ONNX (one file, dynamic batch, checked) and
gates it on real validation images against PyTorch (fp32: >= 99.9% top-1 agreement, max abs
logit difference <= 1e-3). Where TensorRT and CUDA are present, also builds an engine at
``--precision`` and gates it the same way (fp16: >= 99% agreement); where they are not, the
run is tagged ``tensorrt: skipped (<reason>)``, unless TensorRT was asked for alone. A failed
gate fails the step, so nothing is registered. Then each logged format is measured through
the runtime that serves it (ONNX Runtime with the providers the model records: CPU only for
``--target-device cpu``; the TensorRT runner): top-1/top-5 on the validation and test splits
and batch-1 latency (metrics ``<format>.val_top1`` ... ``<format>.latency_ms.bs1``). Writes
exported.json: format -> models:/ URI, and each format's runtime report.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mlflow
import torch

from dha_train.data import DataBundle, load_dataset, to_unit_float
from export.errors import TensorRTUnavailableError
from export.flavors import log_onnx_model, log_tensorrt_model
from export.onnx_export import check_onnx_parity, export_onnx, onnx_execution_providers
from export.runtime_report import RuntimeReport, measure_runtime, onnx_predictor
from export.tensorrt_engine import (
    TensorRTRunner,
    build_engine,
    check_engine_parity,
    current_platform,
    tensorrt_status,
    timing_cache_path,
)
from export.wrap import deployable
from pipeline.artifacts import DerivedModel, load_derived
from pipeline.outputs import STEP_OUTPUTS
from pipeline.params import STEP_PARAMS, add_params, parse_formats, parse_values
from pipeline.runs import step_run

__all__ = ["add_arguments", "run", "parity_images"]

PARITY_IMAGES = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params(parser, STEP_PARAMS["export"])


def parity_images(data: DataBundle, limit: int = PARITY_IMAGES) -> torch.Tensor:
    """Up to ``limit`` real validation images of the child's dataset, [0, 1] RGB."""
    count = min(limit, len(data.val))  # type: ignore[arg-type]
    return to_unit_float(torch.stack([data.val[i][0] for i in range(count)]))


def _onnx_providers(target_device: str) -> list[str]:
    """What the logged ONNX model records and is served with: CPU only for a CPU target."""
    return ["CPUExecutionProvider"] if target_device == "cpu" else onnx_execution_providers()


def _tensorrt(
    model: torch.nn.Module,
    onnx_path: Path,
    derived: DerivedModel,
    images: torch.Tensor,
    precision: str,
    work: Path,
    data: DataBundle,
) -> tuple[str, RuntimeReport]:
    """Build, gate, log and measure the engine; return its model URI and runtime report."""
    engine = build_engine(
        onnx_path,
        work / "tensorrt",
        precision=precision,
        resolution=derived.resolution,
        timing_cache_path=timing_cache_path(current_platform()),
    )
    runner = TensorRTRunner(engine.plan)
    report = check_engine_parity(model, runner, images, strict=True)
    mlflow.log_metrics(report.metrics(f"parity.tensorrt_{precision}"))
    info = log_tensorrt_model(
        engine,
        name="tensorrt",
        class_names=derived.class_names,
        resolution=derived.resolution,
        preprocess=data.preprocess,
    )
    mlflow.set_tag("tensorrt", f"built ({precision})")
    measured = measure_runtime(
        runner, fmt="tensorrt", backend="tensorrt", device="cuda", providers=(), threads=None,
        val=data.val, test=data.test, resolution=derived.resolution,
    )  # fmt: skip
    return info.model_uri, measured


def run(args: argparse.Namespace) -> None:
    values = parse_values(args, STEP_PARAMS["export"])
    formats = parse_formats(values["formats"])
    with step_run("export", values) as active, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        derived = load_derived(values["derive_run_id"])
        record = derived.record
        model = deployable(derived.model, record.mean, record.std).eval()
        data = load_dataset(record.dataset, record.data_dir or None, record.resolution, record.seed)
        images = parity_images(data)
        onnx_path = export_onnx(model, resolution=derived.resolution, path=work / "model.onnx")
        report = check_onnx_parity(model, onnx_path, images, strict=True)
        mlflow.log_metrics(report.metrics("parity.onnx"))
        exported: dict[str, str] = {}
        skipped: dict[str, str] = {}
        runtime: dict[str, RuntimeReport] = {}
        if "onnx" in formats:
            providers = _onnx_providers(values["target_device"])
            exported["onnx"] = log_onnx_model(
                onnx_path,
                name="onnx",
                class_names=derived.class_names,
                resolution=derived.resolution,
                providers=providers,
                input_example=images[:1].numpy().astype("float32"),  # a real image
                preprocess=data.preprocess,  # the evaluation transform, for inference
            ).model_uri
            predict, threads = onnx_predictor(onnx_path, providers)
            runtime["onnx"] = measure_runtime(
                predict, fmt="onnx", backend="onnxruntime",
                device="cpu" if providers[0] == "CPUExecutionProvider" else "cuda",
                providers=providers, threads=threads, val=data.val, test=data.test,
                resolution=derived.resolution,
            )  # fmt: skip
        if "tensorrt" in formats:
            available, reason = tensorrt_status()
            if available:
                exported["tensorrt"], runtime["tensorrt"] = _tensorrt(
                    model, onnx_path, derived, images, values["precision"], work, data
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
        for measured in runtime.values():
            mlflow.log_metrics(measured.metrics())
        mlflow.log_dict(
            {
                "models": exported,
                "skipped": skipped,
                "parity": {"onnx": report.to_dict()},
                "runtime": {fmt: r.to_dict() for fmt, r in runtime.items()},
                "num_classes": derived.num_classes,
                "resolution": derived.resolution,
                "precision": values["precision"],
                "target_device": values["target_device"],
            },
            STEP_OUTPUTS["export"],
        )
        for fmt, uri in exported.items():
            r = runtime[fmt]
            print(
                f"[export] {fmt}: {uri} (run {active.info.run_id}); through {r.backend} on "
                f"{r.device}: val top-1 {r.val_top1:.2f}%, test top-1 {r.test_top1:.2f}%, "
                f"batch-1 {r.latency_ms:.3f} ms",
                flush=True,
            )
