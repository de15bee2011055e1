"""Every format's pyfunc answers the documented schema (export.serving.OUTPUT_SCHEMA) and
refuses input outside [0, 1] or non-finite with a 400 error that names no value. ONNX is the
logged MLflow model; TensorRT is its served pyfunc (export.tensorrt_served) on the CPU stand-in
runner the TensorRT tests use."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import mlflow
import numpy as np
import pytest
import torch

from export.serving import INPUT_NAME, OUTPUT_SCHEMA, ServingInputError
from export.tensorrt_served import ServedTensorRT
from tests.test_export_support import CLASS_NAMES, RESOLUTION, logged_digits_store, trained_digits
from tests.test_export_tensorrt import _StandInRunner

Predict = Callable[[np.ndarray], dict]
MARKER = 8675309.25


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Iterator[str]:
    yield from logged_digits_store(tmp_path_factory)


def _onnx(logged: str) -> Predict:
    model = mlflow.pyfunc.load_model(logged)
    return lambda images: model.predict({INPUT_NAME: images})


def _tensorrt(logged: str) -> Predict:
    served = ServedTensorRT(_StandInRunner(trained_digits().model), CLASS_NAMES, RESOLUTION)
    return lambda images: served.predict({INPUT_NAME: images})


SERVED: dict[str, Callable[[str], Predict]] = {"onnx": _onnx, "tensorrt": _tensorrt}


@pytest.mark.parametrize("fmt", SERVED)
def test_each_format_answers_the_documented_schema(logged: str, fmt: str) -> None:
    trained = trained_digits()
    images = trained.val_images[:20].numpy()
    out = SERVED[fmt](logged)(images)
    assert set(out) == set(OUTPUT_SCHEMA)
    with torch.no_grad():
        expected = trained.model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(out["logits"], expected, atol=1e-4)
    assert out["logits"].dtype == out["probabilities"].dtype == np.float32
    np.testing.assert_allclose(
        out["probabilities"], torch.softmax(torch.from_numpy(expected), 1).numpy(), atol=1e-5
    )
    assert list(out["class_names"]) == CLASS_NAMES
    assert list(out["label"]) == [CLASS_NAMES[i] for i in expected.argmax(1)]
    assert np.mean(out["label"] == np.asarray(CLASS_NAMES)[trained.val_labels[:20]]) > 0.7


def _bad(kind: str) -> np.ndarray:
    images = trained_digits().val_images[:2].numpy().copy()
    if kind == "0-255":
        images = np.round(images * 255)
    else:
        images[1, 2, 3, 4] = {"nan": np.nan, "infinity": np.inf}[kind]
    images[0, 0, 0, 0] = MARKER
    return images.astype(np.float32)


@pytest.mark.parametrize("fmt", SERVED)
@pytest.mark.parametrize(
    ("kind", "message"),
    [("0-255", r"values outside \[0, 1\] \(0-255 pixels"),
     ("nan", "non-finite values"), ("infinity", "non-finite values")],
)  # fmt: skip
def test_each_format_refuses_bad_input_with_a_400_naming_no_value(
    logged: str, fmt: str, kind: str, message: str
) -> None:
    with pytest.raises(ServingInputError, match=message) as caught:
        SERVED[fmt](logged)(_bad(kind))
    assert caught.value.get_http_status_code() == 400
    assert "8675309" not in caught.value.serialize_as_json()
    caught.value.message = "Failed to predict data '[[8675309.25]]'"  # as the server does
    assert "8675309" not in caught.value.serialize_as_json()
