"""Each format's export, one function per entry of :data:`export.formats.FORMATS`.

A builder takes the exported, parity-gated ONNX file and the child it came from
(:class:`ExportInputs`), builds its own file where it needs one, gates it against PyTorch,
logs it as an MLflow model and measures it through the runtime that serves it; it returns
the model URI and that :class:`~export.runtime_report.RuntimeReport`, or raises
:class:`FormatUnavailable` (before any work) with the reason it cannot be built here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch
from torch import nn

from dha_train.data import DataBundle
from export import tensorrt_flavor
from export.flavors import log_onnx_model
from export.onnx_export import onnx_execution_providers
from export.runtime_report import Predictor, RuntimeReport, measure_runtime, onnx_predictor
from export.tensorrt_engine import build_engine, check_engine_parity, timing_cache_path
from export.tensorrt_runtime import TensorRTRunner, current_platform, tensorrt_status

__all__ = ["ExportInputs", "Exported", "FormatUnavailable", "export_onnx_format", "export_tensorrt"]


@dataclass(frozen=True)
class ExportInputs:
    """What every format is built from."""

    model: nn.Module  # the deployable network (normalisation + child), eval mode, CPU
    onnx_path: Path  # its ONNX file, already checked and parity-gated
    class_names: list[str]
    data: DataBundle  # the child's dataset: validation and test splits, preprocess
    images: torch.Tensor  # real validation images for the parity gates
    precision: str
    target_device: str
    work: Path  # a scratch folder


@dataclass(frozen=True)
class Exported:
    model_uri: str
    runtime: RuntimeReport


class FormatUnavailable(Exception):
    """The format cannot be built on this machine; ``hint`` says what would allow it."""

    def __init__(self, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.reason, self.hint = reason, hint


def _measure(predict: Predictor, inputs: ExportInputs, **how: Any) -> RuntimeReport:
    data = inputs.data
    return measure_runtime(predict, val=data.val, test=data.test, resolution=data.resolution, **how)


def export_onnx_format(inputs: ExportInputs) -> Exported:
    """The ONNX file itself, served by ONNX Runtime with the providers the model records
    (CPU only for a CPU target)."""
    if inputs.target_device == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        providers = onnx_execution_providers()
    uri = log_onnx_model(
        inputs.onnx_path,
        name="onnx",
        class_names=inputs.class_names,
        resolution=inputs.data.resolution,
        providers=providers,
        input_example=inputs.images[:1].numpy().astype("float32"),  # a real image
        preprocess=inputs.data.preprocess,  # the evaluation transform, for inference
    ).model_uri
    predict, threads = onnx_predictor(inputs.onnx_path, providers)
    device = "cpu" if providers[0] == "CPUExecutionProvider" else "cuda"
    report = _measure(
        predict, inputs, fmt="onnx", backend="onnxruntime", device=device,
        providers=providers, threads=threads,
    )  # fmt: skip
    return Exported(uri, report)


def export_tensorrt(inputs: ExportInputs) -> Exported:
    """A TensorRT engine at ``precision`` built from the ONNX file, gated, logged with its
    sidecar, and measured through the engine runner."""
    available, reason = tensorrt_status()
    if not available:
        raise FormatUnavailable(reason, "add onnx or run on a CUDA machine with TensorRT")
    engine = build_engine(
        inputs.onnx_path,
        inputs.work / "tensorrt",
        precision=inputs.precision,
        resolution=inputs.data.resolution,
        timing_cache_path=timing_cache_path(current_platform()),
    )
    runner = TensorRTRunner(engine.plan)
    parity = check_engine_parity(inputs.model, runner, inputs.images, strict=True)
    mlflow.log_metrics(parity.metrics(f"parity.tensorrt_{inputs.precision}"))
    info = tensorrt_flavor.log_model(
        engine,
        name="tensorrt",
        class_names=inputs.class_names,
        resolution=inputs.data.resolution,
        preprocess=inputs.data.preprocess,
    )
    mlflow.set_tag("tensorrt", f"built ({inputs.precision})")
    report = _measure(
        runner, inputs, fmt="tensorrt", backend="tensorrt", device="cuda", providers=(),
        threads=None,
    )  # fmt: skip
    return Exported(info.model_uri, report)
