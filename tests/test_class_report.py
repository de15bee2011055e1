"""Per-class report of the derived model: counts, accuracies in percent, top-5, the figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from pipeline.class_report import class_report, confusion_figure, predict_split


def test_confusion_and_accuracies_match_a_direct_count() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (200,), generator=generator)
    logits = torch.randn(200, 4, generator=generator) + 2.0 * torch.eye(4)[labels]
    report = class_report(logits, labels, ["a", "b", "c", "d"])
    predicted = logits.argmax(1)
    for t in range(4):
        for p in range(4):
            assert report.confusion[t, p] == int(((labels == t) & (predicted == p)).sum())
    assert report.top1 == pytest.approx(100.0 * float((predicted == labels).float().mean()))
    for name, t in zip("abcd", range(4), strict=True):
        hits = float((predicted[labels == t] == t).float().mean())
        assert report.per_class_top1[name] == pytest.approx(100.0 * hits)
    assert report.top5 == 100.0  # 4 classes: every label is among the top 5
    assert report.loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)))
    figure = confusion_figure(report)
    assert figure.axes[0].get_xlabel() == "predicted class"


def test_predict_split_runs_the_model_on_unit_float_images() -> None:
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    dataset = TensorDataset(images, torch.arange(10) % 2)
    seen = []

    def model(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return x.flatten(1)[:, :2]

    logits, labels = predict_split(
        model, dataset, batch_size=4, workers=0, device=torch.device("cpu")
    )
    assert logits.shape == (10, 2) and labels.tolist() == (torch.arange(10) % 2).tolist()
    assert all(x.dtype == torch.float32 and float(x.max()) <= 1.0 for x in seen)
    np.testing.assert_allclose(logits.numpy(), images.flatten(1)[:, :2].float().numpy() / 255)
