"""How the derived model does per class: confusion matrix, per-class accuracy, top-1/top-5.

Accuracies are percent in [0, 100], as every accuracy in the pipeline. The figure puts true
classes on rows and predictions on columns, each row normalised to the class's test images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from dha_train.data import to_unit_float

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ClassReport", "class_report", "predict_split", "confusion_figure", "log_test_report"]


@dataclass(frozen=True)
class ClassReport:
    class_names: list[str]
    confusion: np.ndarray  # (classes, classes) counts, [true, predicted]
    top1: float  # percent
    top5: float  # percent
    loss: float  # mean cross-entropy

    @property
    def per_class_top1(self) -> dict[str, float]:
        """Percent of each class's images predicted as that class (NaN: no images)."""
        totals = self.confusion.sum(axis=1)
        hits = np.diag(self.confusion)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = 100.0 * hits / totals
        return {name: float(a) for name, a in zip(self.class_names, acc, strict=True)}

    def to_dict(self) -> dict[str, object]:
        return {
            "class_names": self.class_names,
            "confusion": self.confusion.tolist(),
            "per_class_top1": self.per_class_top1,
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
        }


@torch.inference_mode()
def predict_split(
    model: Callable[[Tensor], Tensor],
    dataset: Dataset,
    *,
    batch_size: int,
    workers: int,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Logits and labels of ``model`` (``[0, 1]`` images -> logits) over ``dataset``, on CPU."""
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, generator=torch.Generator()
    )
    logits, labels = [], []
    for x, y in loader:
        logits.append(model(to_unit_float(x.to(device))).float().cpu())
        labels.append(y)
    return torch.cat(logits), torch.cat(labels)


def class_report(logits: Tensor, labels: Tensor, class_names: list[str]) -> ClassReport:
    """Confusion matrix, top-1/top-5 (percent) and loss from logits ``(N, C)`` and labels."""
    n_classes = len(class_names)
    predicted = logits.argmax(dim=1)
    confusion = np.bincount(
        (labels * n_classes + predicted).numpy(), minlength=n_classes * n_classes
    ).reshape(n_classes, n_classes)
    k = min(5, n_classes)
    top5_hits = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    n = max(len(labels), 1)
    return ClassReport(
        class_names=list(class_names),
        confusion=confusion,
        top1=100.0 * float(np.trace(confusion)) / n,
        top5=100.0 * float(top5_hits.sum()) / n,
        loss=float(F.cross_entropy(logits, labels)) if len(labels) else float("nan"),
    )


def confusion_figure(report: ClassReport) -> Figure:
    """The row-normalised confusion matrix as a matplotlib figure (counts in the cells)."""
    from matplotlib.figure import Figure  # matplotlib's object API: no pyplot state

    counts = report.confusion
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    n = len(report.class_names)
    side = min(max(4.0, 0.45 * n + 2.0), 14.0)
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.subplots()
    image = ax.imshow(share * 100.0, cmap="Blues", vmin=0.0, vmax=100.0)
    fig.colorbar(image, ax=ax, label="% of the true class's test images")
    if n <= 30:  # beyond that the labels and counts overlap
        ax.set_xticks(range(n), report.class_names, rotation=90)
        ax.set_yticks(range(n), report.class_names)
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    color = "white" if share[i, j] > 0.5 else "black"
                    ax.text(
                        j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, color=color
                    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"derived model on the test split: top-1 {report.top1:.1f}%")
    fig.tight_layout()
    return fig


def log_test_report(
    model: Callable[[Tensor], Tensor],
    dataset: Dataset,
    class_names: list[str],
    *,
    folder: str,
    workers: int,
    device: torch.device,
) -> ClassReport:
    """``model``'s report on the test split ``dataset``, logged to the active MLflow run:
    metrics ``test_top1``, ``test_top5``, ``test_loss``, and ``<folder>/per_class.json`` and
    ``<folder>/confusion_matrix.png``."""
    import mlflow

    logits, labels = predict_split(model, dataset, batch_size=128, workers=workers, device=device)
    report = class_report(logits, labels, class_names)
    mlflow.log_metrics(
        {"test_top1": report.top1, "test_top5": report.top5, "test_loss": report.loss}
    )
    mlflow.log_dict(report.to_dict(), f"{folder}/per_class.json")
    mlflow.log_figure(confusion_figure(report), f"{folder}/confusion_matrix.png")
    return report
