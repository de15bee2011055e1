"""The evaluation transform travels with the model: `dha predict` on image files sees what
evaluation saw, so its top-1 equals the child's test top-1 that search_train records, on an
ImageFolder dataset at 224 px."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dha_train.data import ImageFiles, load_dataset
from dha_train.errors import ConfigError
from dha_train.preprocess import Preprocess
from export.champion import eligibility
from export.flavors import log_onnx_model
from export.onnx_export import export_onnx
from export.registry import CHAMPION, register_model_version
from export.wrap import Normalize, deployable
from pipeline.class_report import class_report, predict_split
from pipeline.cli import main

RESOLUTION = 224


def test_preprocess_round_trips_and_refuses_foreign_records() -> None:
    pre = Preprocess.centre_crop(224, crop_fraction=224 / 256, mean=(0.4, 0.5, 0.6), std=(1, 2, 3))
    assert pre.resize == 256 and Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(ConfigError, match="schema_version"):
        Preprocess.from_dict({**pre.to_dict(), "schema_version": 9})
    with pytest.raises(ConfigError, match="unknown fields"):
        Preprocess.from_dict({**pre.to_dict(), "flip": True})
    with pytest.raises(ConfigError, match="resolution <= resize"):
        Preprocess(resolution=32, resize=16)


def _digit_folders(root: Path, per_class: int = 10) -> None:
    """Real digits, stretched to 320 x 224 (wider than tall, the digit reaching the left and
    right edges), as PNG class folders: a square resize and a centre crop see different
    images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(10):
        images = digits.images[digits.target == label][: 2 * per_class]
        for i, image in enumerate(images):
            split = "train" if i < per_class else "val"
            folder = root / split / f"digit_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            grey = Image.fromarray((image * 255 / 16).astype(np.uint8))
            grey.resize((320, 224), Image.Resampling.BILINEAR).convert("RGB").save(
                folder / f"{i}.png"
            )


def _tiny_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 8, stride=8), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(16 * 49, 10),
    )  # fmt: skip


def _train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int) -> None:
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _predicted(stdout: str) -> dict[str, str]:
    """``dha predict`` lines ``<path>: <class> <prob>, ...`` -> path -> top class."""
    out = {}
    for line in stdout.splitlines():
        path, _, ranked = line.rpartition(": ")
        out[path] = ranked.split(", ")[0].split(" ")[0]
    return out


def test_dha_predict_top1_equals_the_recorded_test_top1_on_imagefolder_224(
    mlflow_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _digit_folders(tmp_path / "data")
    data = load_dataset("imagefolder", tmp_path / "data", RESOLUTION, seed=0)
    assert data.preprocess is not None and data.preprocess.resize == 256
    torch.manual_seed(0)
    child = _tiny_net()
    train = ImageFiles(data.train.samples, data.preprocess.transform())  # type: ignore[attr-defined]
    images = torch.stack([train[i][0] for i in range(len(train))]).float() / 255
    labels = torch.tensor([label for _, label in train.samples])
    _train(nn.Sequential(Normalize(data.mean, data.std), child), images, labels, steps=40)
    model = deployable(child, data.mean, data.std)

    # what search_train records (log_test_report): the deployed network over the test split
    logits, truth = predict_split(
        model, data.test, batch_size=64, workers=0, device=torch.device("cpu")
    )
    derive_top1 = class_report(logits, truth, data.class_names).top1

    path = export_onnx(model, resolution=RESOLUTION, path=tmp_path / "model.onnx")
    with mlflow.start_run():
        info = log_onnx_model(
            path, name="model", class_names=data.class_names, resolution=RESOLUTION,
            preprocess=data.preprocess,
        )  # fmt: skip
    registered = register_model_version(
        info.model_uri, name="pre-imagefolder-onnx", budgets={},
        tags={"val_top1": 90.0, **eligibility(val_top1=90.0, num_classes=10).tags()},
    )  # fmt: skip
    files = [sample for sample, _ in data.test.samples]  # type: ignore[attr-defined]
    capsys.readouterr()
    assert main(["predict", "--model", registered.alias_uri(CHAMPION), "--top", "1", *files]) == 0
    predicted = _predicted(capsys.readouterr().out)
    assert sorted(predicted) == sorted(files)
    names = [data.class_names[i] for i in logits.argmax(1).tolist()]
    expected_labels = [data.class_names[i] for i in truth.tolist()]
    predict_top1 = 100.0 * np.mean(
        [predicted[f] == want for f, want in zip(files, expected_labels, strict=True)]
    )
    assert len(set(names)) > 3  # the network tells digits apart: the comparison has teeth
    assert predict_top1 == pytest.approx(derive_top1)
    assert [predicted[f] for f in files] == names  # image by image, not just the count
