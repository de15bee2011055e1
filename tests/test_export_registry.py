"""ONNX path end to end against a real SQLite registry: export, parity, log, register, alias
rules, atomic registration, and loading by alias in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from dha_train.preprocess import Preprocess
from export.champion import current_champion, eligibility
from export.errors import ExportError, RegistrationError
from export.inference import load_images
from export.registry import CHAMPION, LATEST, register_model_version, registered_name
from tests.conftest import REPO
from tests.test_export_support import (
    CLASS_NAMES,
    RESOLUTION,
    logged_digits_store,
    trained_digits,
)

BUDGETS = {"max_params_m": 1.0, "max_flops_m": None, "max_latency_ms": 5.0}


@pytest.fixture(scope="module")
def logged_uri(tmp_path_factory) -> Iterator[str]:
    yield from logged_digits_store(tmp_path_factory)


def _tags(val_top1: float) -> dict[str, str]:
    """Tags of a version with this validation top-1 (percent), eligibility decided by the rule."""
    allowed = eligibility(val_top1=val_top1, num_classes=len(CLASS_NAMES))
    return {"val_top1": str(val_top1), "dataset": "digits", "space": "tiny", **allowed.tags()}


def _save_pngs(images: torch.Tensor, folder) -> list[str]:
    folder.mkdir()
    paths = []
    for i, image in enumerate(images):
        array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        paths.append(str(folder / f"img{i}.png"))
        Image.fromarray(array).save(paths[-1])
    return paths


_FRESH = """
import sys, numpy as np
from export.inference import load_classifier, format_predictions
clf = load_classifier(sys.argv[1])
np.save(sys.argv[3], clf(np.load(sys.argv[2])))
paths = sys.argv[4:]
np.save(sys.argv[3] + ".png.npy", clf(paths))
print(format_predictions(paths, clf.topk(paths, k=3)))
"""


def test_onnx_end_to_end_loaded_by_alias_in_a_fresh_process(logged_uri, tmp_path) -> None:
    trained = trained_digits()
    name = registered_name("tiny", "digits", "onnx")
    val_top1 = 100.0 * trained.val_accuracy
    registered = register_model_version(
        logged_uri, name=name, tags=_tags(val_top1), budgets=BUDGETS
    )
    assert registered.aliases == (LATEST, CHAMPION)
    version = MlflowClient().get_model_version(name, registered.version)
    assert version.tags["val_top1"] == str(val_top1)
    assert version.tags["budget.max_params_m"] == "1.0"
    assert version.tags["budget.max_flops_m"] == "none"

    images = trained.val_images[:40]
    np.save(tmp_path / "x.npy", images.numpy())
    pngs = _save_pngs(images[:5], tmp_path / "pngs")
    result = subprocess.run(
        [sys.executable, "-c", _FRESH, registered.alias_uri(CHAMPION), str(tmp_path / "x.npy"),
         str(tmp_path / "probs.npy"), *pngs],
        cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    with torch.no_grad():
        expected = torch.softmax(trained.model(images), dim=1).numpy()
        expected_png = torch.softmax(
            trained.model(torch.from_numpy(load_images(pngs, Preprocess.centre_crop(RESOLUTION)))),
            dim=1,
        ).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), expected, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy.png.npy"), expected_png, atol=1e-5)
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == pngs
    top = [CLASS_NAMES[i] for i in expected_png.argmax(axis=1)]
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == top


def test_champion_moves_only_when_more_accurate_within_the_same_budgets(logged_uri) -> None:
    uri = logged_uri
    name = registered_name("tiny", "digits", "onnx", prefix="alias")
    client = MlflowClient()

    def champion() -> str:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)

    def latest() -> str:
        return str(client.get_model_version_by_alias(name, LATEST).version)

    chance = register_model_version(uri, name=name, tags=_tags(10.0), budgets=BUDGETS)
    assert chance.aliases == (LATEST,) and "below 20.00%" in chance.champion_reason
    assert current_champion(client, name) is None
    first = register_model_version(uri, name=name, tags=_tags(80.0), budgets=BUDGETS)
    assert (champion(), latest()) == (first.version, first.version)
    worse = register_model_version(uri, name=name, tags=_tags(70.0), budgets=BUDGETS)
    assert (champion(), latest()) == (first.version, worse.version)
    tie = register_model_version(uri, name=name, tags=_tags(80.0), budgets=BUDGETS)
    assert (champion(), latest()) == (first.version, tie.version)
    assert "<= champion" in tie.champion_reason
    other_budget = {**BUDGETS, "max_params_m": 50.0}
    bigger = register_model_version(uri, name=name, tags=_tags(99.0), budgets=other_budget)
    assert (champion(), latest()) == (first.version, bigger.version)
    assert CHAMPION not in bigger.aliases and "another scope" in bigger.champion_reason
    other_size = register_model_version(
        uri, name=name, tags={**_tags(99.0), "resolution": "64"}, budgets=BUDGETS
    )
    assert CHAMPION not in other_size.aliases and "resolution" in other_size.champion_reason
    better = register_model_version(uri, name=name, tags=_tags(85.0), budgets=BUDGETS)
    assert (champion(), latest()) == (better.version, better.version)
    assert better.aliases == (LATEST, CHAMPION)


def test_failed_registration_leaves_no_version_and_restores_aliases(logged_uri) -> None:
    uri = logged_uri
    name = registered_name("tiny", "digits", "onnx", prefix="atomic")
    client = MlflowClient()
    kept = register_model_version(uri, name=name, tags=_tags(50.0), budgets=BUDGETS)
    # an invalid tag key fails inside MLflow after the version was created
    with pytest.raises(RegistrationError, match="undone"):
        register_model_version(
            uri, name=name, tags={**_tags(90.0), "bad@key": "x"}, budgets=BUDGETS
        )
    versions = client.search_model_versions(f"name = '{name}'")
    assert [str(v.version) for v in versions] == [kept.version]
    for alias in (LATEST, CHAMPION):
        assert str(client.get_model_version_by_alias(name, alias).version) == kept.version
    # a first registration that fails leaves no registered model behind either
    fresh = registered_name("tiny", "digits", "onnx", prefix="atomic-new")
    with pytest.raises(RegistrationError):
        register_model_version(uri, name=fresh, tags={**_tags(90.0), "a/../b": "x"}, budgets={})
    assert client.search_registered_models(filter_string=f"name = '{fresh}'") == []


@pytest.mark.parametrize(
    ("tags", "budgets", "match"),
    [({"dataset": "digits"}, {}, "val_top1"), ({"val_top1": "high"}, {}, "val_top1"),
     ({"val_top1": "nan"}, {}, "val_top1"),
     ({"val_top1": "90"}, {"max_params_m": float("nan")}, "max_params_m")],
)  # fmt: skip
def test_bad_accuracy_or_budget_is_refused_before_anything_is_created(
    logged_uri, tags, budgets, match
) -> None:
    with pytest.raises(RegistrationError, match=match):
        register_model_version(logged_uri, name="never", tags=tags, budgets=budgets)
    assert MlflowClient().search_registered_models(filter_string="name = 'never'") == []


def test_registered_name_scheme() -> None:
    assert registered_name("mobilenet", "cifar10", "onnx") == "dha-mobilenet-cifar10-onnx"
    assert registered_name("Cell", "my data/set", "tensorrt", prefix="acme") == (
        "acme-cell-my-data-set-tensorrt"
    )
    with pytest.raises(RegistrationError, match="format"):
        registered_name("cell", "cifar10", "pt")


def test_load_classifier_checks_the_onnx_file_against_its_recorded_sha256(
    logged_uri, tmp_path
) -> None:
    from export.flavors import ONNX_SHA256
    from export.inference import load_classifier
    from tests.test_export_support import _log_digits_model

    uri = _log_digits_model(tmp_path)  # its own copy: this test changes the file
    sha = mlflow.models.get_model_info(uri).metadata[ONNX_SHA256]
    name = registered_name("tiny", "digits", "onnx", prefix="sha")
    good = register_model_version(
        uri, name=name, tags={**_tags(90.0), ONNX_SHA256: sha}, budgets=BUDGETS
    )
    probs = load_classifier(good.model_uri)(np.zeros((1, 3, RESOLUTION, RESOLUTION), np.float32))
    assert probs.shape == (1, len(CLASS_NAMES))
    wrong = register_model_version(
        uri, name=name, tags={**_tags(90.0), ONNX_SHA256: "0" * 64}, budgets=BUDGETS
    )
    with pytest.raises(ExportError, match="registered version's tag"):
        load_classifier(wrong.model_uri)
    model_id = uri.removeprefix("models:/")
    stored = Path(mlflow.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    onnx_file = stored / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(ExportError, match="MLmodel metadata"):
        load_classifier(good.alias_uri(CHAMPION))
