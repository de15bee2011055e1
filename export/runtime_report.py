"""What a deployed file really does, measured through the runtime that serves it.

For each exported format: top-1/top-5 (percent) on the validation and test splits, and the
batch-1 latency, through ONNX Runtime (with the execution providers the MLflow model
records, i.e. those the served model uses) or the TensorRT engine runner. These figures,
not PyTorch's, go onto the format's registered version (:meth:`RuntimeReport.tags`).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dha_train.data import to_unit_float
from dha_train.nas.latency_runtimes import ort_session
from dha_train.timing import time_callable
from export.onnx_export import INPUT_NAME, OUTPUT_NAME

__all__ = [
    "RuntimeReport",
    "Predictor",
    "onnx_predictor",
    "topk_accuracy",
    "measure_runtime",
]

logger = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], np.ndarray]  # float32 (N, 3, R, R) in [0, 1] -> logits
_EVAL_BATCH = 64


@dataclass(frozen=True)
class RuntimeReport:
    """One format's accuracy and batch-1 latency through its serving runtime."""

    fmt: str
    backend: str  # onnxruntime | tensorrt
    device: str  # cpu | cuda
    providers: tuple[str, ...]
    threads: int | None  # CPU intra-op threads (None on CUDA)
    val_top1: float
    val_top5: float
    test_top1: float
    test_top5: float
    latency_ms: float  # median, batch 1
    latency_p90_ms: float
    runtime_version: str

    def tags(self) -> dict[str, str]:
        """Version tags: accuracy and latency of *this* format, with how they were taken."""
        return {
            "val_top1": f"{self.val_top1:.4f}",
            "val_top5": f"{self.val_top5:.4f}",
            "test_top1": f"{self.test_top1:.4f}",
            "test_top5": f"{self.test_top5:.4f}",
            "latency_ms": f"{self.latency_ms:.4f}",
            "latency_backend": self.backend,
            "latency_device": self.device,
            "latency_batch": "1",
            "latency_threads": "" if self.threads is None else str(self.threads),
            "latency_providers": ",".join(self.providers),
            f"{self.backend}_version": self.runtime_version,
        }

    def metrics(self) -> dict[str, float]:
        """``<fmt>.val_top1``, ..., ``<fmt>.latency_ms.bs1`` for the export run."""
        names = ("val_top1", "val_top5", "test_top1", "test_top5")
        out = {f"{self.fmt}.{n}": float(getattr(self, n)) for n in names}
        out[f"{self.fmt}.latency_ms.bs1"] = self.latency_ms
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeReport:
        return cls(**{**data, "providers": tuple(data["providers"])})


def onnx_predictor(
    onnx_path: Path, providers: Sequence[str], threads: int | None = None
) -> tuple[Predictor, int | None]:
    """An ONNX Runtime session on ``providers``; returns (predict, CPU threads used).

    The session is :func:`dha_train.nas.latency_runtimes.ort_session`, the one the latency
    budget's table is timed with, so the deployed model's latency and the budget agree."""
    session, used = ort_session(onnx_path, list(providers), threads)

    def predict(images: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]

    return predict, used


def topk_accuracy(predict: Predictor, split: Dataset, *, k: int = 5) -> tuple[float, float]:
    """(top-1, top-k) in percent of ``predict`` over a dataset split of (image, label)."""
    count = len(split)  # type: ignore[arg-type]
    if count == 0:
        raise ValueError("cannot measure accuracy on an empty split")
    hits1 = hitsk = 0
    for start in range(0, count, _EVAL_BATCH):
        items = [split[i] for i in range(start, min(start + _EVAL_BATCH, count))]
        images = to_unit_float(torch.stack([image for image, _ in items])).numpy()
        labels = np.asarray([label for _, label in items])
        logits = np.asarray(predict(np.ascontiguousarray(images, dtype=np.float32)))
        ranked = np.argsort(-logits, axis=1, kind="stable")[:, : min(k, logits.shape[1])]
        hits1 += int((ranked[:, 0] == labels).sum())
        hitsk += int((ranked == labels[:, None]).any(axis=1).sum())
    return 100.0 * hits1 / count, 100.0 * hitsk / count


def measure_runtime(
    predict: Predictor,
    *,
    fmt: str,
    backend: str,
    device: str,
    providers: Sequence[str],
    threads: int | None,
    val: Dataset,
    test: Dataset,
    resolution: int,
    max_seconds: float = 2.0,
) -> RuntimeReport:
    """Accuracy on ``val`` and ``test`` and batch-1 latency of ``predict`` (wall clock; the
    predictors return host arrays, so each call ends when its result is ready)."""
    val_top1, val_top5 = topk_accuracy(predict, val)
    test_top1, test_top5 = topk_accuracy(predict, test)
    image = np.random.default_rng(0).random((1, 3, resolution, resolution), dtype=np.float32)
    stats = time_callable(lambda: predict(image), device="cpu", max_seconds=max_seconds)
    report = RuntimeReport(
        fmt=fmt,
        backend=backend,
        device=device,
        providers=tuple(providers),
        threads=threads,
        val_top1=val_top1,
        val_top5=val_top5,
        test_top1=test_top1,
        test_top5=test_top5,
        latency_ms=stats.median_ms,
        latency_p90_ms=stats.p90_ms,
        runtime_version=str(importlib.import_module(backend).__version__),
    )
    logger.info(
        "%s through %s on %s: val top-1 %.2f%%, test top-1 %.2f%%, batch-1 %.3f ms",
        fmt, backend, device, val_top1, test_top1, stats.median_ms,
    )  # fmt: skip
    return report
