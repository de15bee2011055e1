"""export: deployable files with parity gates, logged as MLflow models, measured as deployed.

Reads the child of ``--search-run-id``; wraps it with its input normalisation (deployed models
take RGB in [0, 1], shaped (N, 3, R, R)); exports ONNX (one file, dynamic batch, checked) and
gates it on real validation images against PyTorch (fp32: >= 99.9% top-1 agreement, max abs
logit difference <= 1e-3). Then each format asked for is built from it by its entry in
:data:`export.formats.FORMATS` (:mod:`export.format_builders`): the ONNX model itself, and,
where TensorRT and CUDA are present, an engine at ``--precision`` gated the same way (fp16:
>= 99% agreement). A format that cannot be built here is tagged ``<format>: skipped
(<reason>)``, unless it was asked for alone. A failed gate fails the step, so nothing is
registered. Each logged format is measured through the runtime that serves it (ONNX Runtime
with the providers the model records: CPU only for ``--target-device cpu``; the TensorRT
runner): top-1/top-5 on the validation and test splits and batch-1 latency (metrics
``<format>.val_top1`` ... ``<format>.latency_ms.bs1``). Writes exported.json: format ->
models:/ URI, and each format's runtime report.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mlflow
import torch

from dha_train.data import DataBundle, load_dataset, to_unit_float
from export.errors import ExportError
from export.format_builders import ExportInputs, FormatUnavailable
from export.formats import FORMATS
from export.onnx_export import check_onnx_parity, export_onnx
from export.runtime_report import RuntimeReport
from export.wrap import deployable
from pipeline.artifacts import load_derived, search_run_id
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


def run(args: argparse.Namespace) -> None:
    values = parse_values(args, STEP_PARAMS["export"])
    formats = parse_formats(values["formats"])
    search_run = search_run_id(values["search_run_id"])
    with step_run("export", values) as active, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        derived = load_derived(search_run)
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
        inputs = ExportInputs(
            model=model, onnx_path=onnx_path, class_names=derived.class_names, data=data,
            images=images, precision=values["precision"], target_device=values["target_device"],
            work=work,
        )  # fmt: skip
        for fmt in formats:  # each format is one entry of export.formats.FORMATS
            try:
                built = FORMATS[fmt].load_builder()(inputs)
            except FormatUnavailable as exc:
                if len(formats) == 1:
                    raise ExportError(
                        f"formats={fmt} but {fmt} is unavailable ({exc.reason}): {exc.hint}"
                    ) from None
                skipped[fmt] = exc.reason
                mlflow.set_tag(fmt, f"skipped ({exc.reason})")
                print(f"[export] {fmt}: skipped ({exc.reason})", flush=True)
                continue
            exported[fmt], runtime[fmt] = built.model_uri, built.runtime
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
