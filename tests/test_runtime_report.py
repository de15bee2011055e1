"""Accuracy and latency of an exported ONNX file measured through ONNX Runtime itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from export.onnx_export import export_onnx
from export.runtime_report import RuntimeReport, measure_runtime, onnx_predictor, topk_accuracy
from tests.test_export_support import RESOLUTION, trained_digits


def _torch_topk(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, k: int):
    with torch.no_grad():
        ranked = model(images).topk(k, dim=1).indices
    top1 = (ranked[:, 0] == labels).float().mean().item() * 100
    topk = (ranked == labels[:, None]).any(dim=1).float().mean().item() * 100
    return top1, topk


def test_topk_accuracy_counts_hits_of_a_known_predictor() -> None:
    labels = torch.tensor([0, 1, 2, 3])
    # scores put the true class first for samples 0 and 1, second for 2, last for 3
    scores = np.array(
        [[9, 1, 0, 0], [0, 9, 1, 0], [0, 9, 8, 0], [9, 8, 7, 0]], dtype=np.float32
    )  # fmt: skip
    split = TensorDataset(torch.zeros(4, 3, 2, 2), labels)
    calls = iter([scores])
    top1, top2 = topk_accuracy(lambda images: next(calls), split, k=2)
    assert (top1, top2) == (50.0, 75.0)


def test_onnx_runtime_report_matches_the_network_and_round_trips(tmp_path) -> None:
    trained = trained_digits()
    path = export_onnx(trained.model, resolution=RESOLUTION, path=tmp_path / "digits.onnx")
    predict, threads = onnx_predictor(path, ["CPUExecutionProvider"], threads=1)
    assert threads == 1
    val = TensorDataset(trained.val_images[:150], trained.val_labels[:150])
    test = TensorDataset(trained.val_images[150:], trained.val_labels[150:])
    report = measure_runtime(
        predict, fmt="onnx", backend="onnxruntime", device="cpu",
        providers=["CPUExecutionProvider"], threads=threads, val=val, test=test,
        resolution=RESOLUTION, max_seconds=0.2,
    )  # fmt: skip
    expected_val = _torch_topk(trained.model, *val.tensors, k=5)
    expected_test = _torch_topk(trained.model, *test.tensors, k=5)
    assert (report.val_top1, report.val_top5) == pytest.approx(expected_val, abs=1e-4)
    assert (report.test_top1, report.test_top5) == pytest.approx(expected_test, abs=1e-4)
    assert report.latency_ms > 0 and report.latency_p90_ms >= report.latency_ms
    tags = report.tags()
    assert (tags["latency_backend"], tags["latency_device"], tags["latency_threads"]) == (
        "onnxruntime", "cpu", "1"
    )  # fmt: skip
    assert float(tags["val_top1"]) == pytest.approx(report.val_top1, abs=1e-4)
    assert RuntimeReport.from_dict(report.to_dict()) == report
    assert report.metrics()["onnx.latency_ms.bs1"] == report.latency_ms
