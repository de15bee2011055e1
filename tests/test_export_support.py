"""Shared test material for the export tests: a small conv net trained on real digits.

Parity on a random-init network is meaningless (tiny logits make any diff look small), so
the net is trained until its BN statistics and weights are real. Also tests ``export.wrap``.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from export.errors import ExportError
from export.flavors import log_onnx_model
from export.onnx_export import check_onnx_parity, export_onnx
from export.wrap import Normalize, deployable

RESOLUTION = 32
CLASS_NAMES = [f"digit_{i}" for i in range(10)]


@dataclass(frozen=True)
class TrainedDigits:
    """A deployable net (input in [0, 1]) and held-out images it was not trained on."""

    model: nn.Module
    val_images: torch.Tensor
    val_labels: torch.Tensor
    val_accuracy: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def digits_rgb(resolution: int = RESOLUTION) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn digits as float32 RGB ``(N, 3, R, R)`` in [0, 1] and labels (upscaled as
    ``dha_train.data`` does)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.repeat(1, 3, 1, 1).clamp(0, 1).contiguous(), torch.from_numpy(digits.target)


def small_convnet(num_classes: int = 10) -> nn.Module:
    """Three conv+BN+ReLU blocks, global pooling, a linear head."""

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(3, 16, 2),
        *block(16, 32, 2),
        *block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


def _train(child: nn.Module, norm: Normalize, images, labels, train_idx, epochs: int) -> None:
    optimizer = torch.optim.Adam(child.parameters(), lr=1e-2)
    child.train()
    for _ in range(epochs):
        for batch in train_idx[torch.randperm(len(train_idx))].split(64):
            loss = F.cross_entropy(child(norm(images[batch])), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


@functools.cache
def trained_digits(epochs: int = 3, resolution: int = RESOLUTION) -> TrainedDigits:
    """Train :func:`small_convnet` on 1500 digits at ``resolution`` px for a few epochs
    (~15-30 s on 2 busy cores).

    The trained weights are kept in the temp directory, keyed by this file's source, so
    later test sessions skip the training.
    """
    torch.manual_seed(0)
    images, labels = digits_rgb(resolution)
    order = torch.randperm(len(images))
    train_idx, val_idx = order[:1500], order[1500:]
    mean = tuple(images[train_idx].mean(dim=(0, 2, 3)).tolist())
    std = tuple(images[train_idx].std(dim=(0, 2, 3)).tolist())
    child = small_convnet()
    salt = f"{epochs}-{resolution}".encode()
    key = hashlib.sha256(Path(__file__).read_bytes() + salt).hexdigest()[:16]
    cached = Path(tempfile.gettempdir()) / f"dha-export-digits-{key}.pt"
    if cached.is_file():
        child.load_state_dict(torch.load(cached, weights_only=True))
    else:
        _train(child, Normalize(mean, std), images, labels, train_idx, epochs)
        torch.save(child.state_dict(), cached)
    model = deployable(child, mean, std)
    with torch.no_grad():
        accuracy = (model(images[val_idx]).argmax(1) == labels[val_idx]).float().mean().item()
    return TrainedDigits(model, images[val_idx], labels[val_idx], accuracy, mean, std)  # type: ignore[arg-type]


def test_trained_net_learned_digits() -> None:
    trained = trained_digits()
    assert len(trained.val_images) == 297
    assert trained.val_accuracy > 0.85  # chance is 0.1: BN statistics and weights are real
    bn = trained.model[1][1]
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_deployable_normalises_then_runs_the_child() -> None:
    torch.manual_seed(1)
    child = small_convnet().eval()
    mean, std = (0.2, 0.3, 0.4), (0.5, 0.25, 2.0)
    x = torch.rand(4, 3, RESOLUTION, RESOLUTION)
    manual = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    wrapped = deployable(child, mean, std)
    assert not wrapped.training
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), child(manual))
    assert wrapped[1] is not child  # the caller's model is not moved or switched to eval


@pytest.mark.parametrize(
    ("mean", "std"), [((0.5, 0.5), (0.2, 0.2, 0.2)), ((0.5, 0.5, 0.5), (0.2, 0.0, 0.2))]
)
def test_normalize_rejects_bad_statistics(mean: tuple, std: tuple) -> None:
    with pytest.raises(ExportError, match="std"):
        Normalize(mean, std)


def _log_digits_model(tmp_path) -> str:
    """Export, gate and log the trained digits net; return its LoggedModel URI."""
    trained = trained_digits()
    path = export_onnx(trained.model, resolution=RESOLUTION, path=tmp_path / "digits.onnx")
    check_onnx_parity(trained.model, path, trained.val_images, strict=True)
    with mlflow.start_run():
        info = log_onnx_model(
            path,
            name="model",
            class_names=CLASS_NAMES,
            resolution=RESOLUTION,
            input_example=trained.val_images[:1].numpy(),
        )
    return info.model_uri


def logged_digits_store(tmp_path_factory) -> Iterator[str]:
    """Body of a module-scoped fixture: a SQLite store and one logged model shared by the
    tests of a module (each costs seconds to set up); each test registers its own name."""
    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        yield _log_digits_model(tmp)
