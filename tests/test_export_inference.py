"""Inference API: a logged model loaded back as a classifier on paths, PIL images, tensors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from dha_train.preprocess import Preprocess
from export.errors import ExportError
from export.inference import Classifier, format_predictions, load_classifier, load_images
from tests.test_export_support import (
    CLASS_NAMES,
    RESOLUTION,
    logged_digits_store,
    trained_digits,
)


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Iterator[str]:
    yield from logged_digits_store(tmp_path_factory)


@pytest.fixture(scope="module")
def classifier(logged: str) -> Classifier:
    return load_classifier(logged)


def test_the_model_carries_a_real_input_example(logged: str, classifier: Classifier) -> None:
    import mlflow

    info = mlflow.models.get_model_info(logged)
    assert info.saved_input_example_info is not None
    model = mlflow.pyfunc.load_model(logged)
    example = model.input_example
    images = example["images"] if isinstance(example, dict) else example
    assert np.asarray(images).shape == (1, 3, RESOLUTION, RESOLUTION)
    np.testing.assert_allclose(np.asarray(images), trained_digits().val_images[:1].numpy())
    logits = model.predict(example)["logits"]
    assert logits.shape == (1, len(CLASS_NAMES)) and np.isfinite(logits).all()


def _pil(image: torch.Tensor, size: int) -> Image.Image:
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array).resize((size, size), Image.Resampling.NEAREST)


def test_classifier_matches_pytorch_on_tensors_and_arrays(classifier) -> None:
    trained = trained_digits()
    images = trained.val_images[:32]
    with torch.no_grad():
        expected = torch.softmax(trained.model(images), dim=1).numpy()
    assert classifier.class_names == CLASS_NAMES and classifier.resolution == RESOLUTION
    np.testing.assert_allclose(classifier(images), expected, atol=1e-5)
    np.testing.assert_allclose(classifier(images.numpy()), expected, atol=1e-5)
    np.testing.assert_allclose(classifier(images).sum(axis=1), 1.0, atol=1e-5)


def test_paths_and_pil_images_are_resized_to_the_model(classifier, tmp_path) -> None:
    trained = trained_digits()
    pils = [_pil(image, 64) for image in trained.val_images[:4]]  # twice the model's size
    pils.append(pils[0].convert("L"))  # grey scale becomes RGB
    paths = []
    for i, image in enumerate(pils):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    array = load_images(paths, Preprocess.centre_crop(RESOLUTION))
    assert array.shape == (5, 3, RESOLUTION, RESOLUTION) and array.dtype == np.float32
    assert array.min() >= 0.0 and array.max() <= 1.0
    np.testing.assert_allclose(classifier(paths), classifier(pils), atol=1e-6)
    np.testing.assert_allclose(classifier(paths)[0], classifier(paths)[4], atol=1e-2)
    labels = trained.val_labels[:4].numpy()
    assert (classifier(paths)[:4].argmax(1) == labels).mean() >= 0.75


def test_topk_is_sorted_and_formatted(classifier) -> None:
    images = trained_digits().val_images[:3]
    probs = classifier(images)
    ranked = classifier.topk(images, k=3)
    assert [len(r) for r in ranked] == [3, 3, 3]
    for row, top in zip(probs, ranked, strict=True):
        assert [name for name, _ in top] == [CLASS_NAMES[i] for i in np.argsort(-row)[:3]]
        assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    assert len(classifier.topk(images, k=50)[0]) == len(CLASS_NAMES)
    text = format_predictions(["a.png", "b.png", "c.png"], ranked)
    first_name, first_prob = ranked[0][0]
    assert text.splitlines()[0].startswith(f"a.png: {first_name} {first_prob:.3f}, ")
    assert len(text.splitlines()) == 3


def test_wrong_inputs_are_user_errors(classifier, tmp_path) -> None:
    expected = r"expected float32 images shaped \(N, 3, 32, 32\), RGB in \[0, 1\]"
    with pytest.raises(ExportError, match=r"shaped \(2, 3, 16, 16\); " + expected):
        classifier(np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(ExportError, match="outside \\[0, 1\\] \\(0-255 pixels"):
        classifier(np.full((1, 3, 32, 32), 255.0, np.float32))
    with pytest.raises(ExportError, match="cannot read image"):
        classifier([tmp_path / "missing.png"])
    assert classifier(np.zeros((0, 3, 32, 32), np.float32)).shape == (0, 10)
