"""What a served model answers, the same for every format, and what it refuses.

Input: ``images``, float32 ``(N, 3, R, R)``, RGB in [0, 1] (pixels / 255, after the model's
:class:`dha_train.preprocess.Preprocess` resize and crop), finite. Output of pyfunc
``predict`` (``mlflow models serve`` puts it under ``"predictions"``), :data:`OUTPUT_SCHEMA`:

    logits         float32 (N, C)  the network's raw scores
    probabilities  float32 (N, C)  softmax of the logits (rows sum to 1)
    label          str (N,)        the most probable class name of each image
    class_names    str (C,)        the class of each column of logits and probabilities

Any other input raises :class:`ServingInputError` (``INVALID_PARAMETER_VALUE``: HTTP 400 from
``mlflow models serve``), whose message says what is wrong and what is expected, never the
values that were sent. This module is also the ONNX model's pyfunc loader
(:func:`_load_pyfunc`); with ``export/__init__.py`` it is all the code that model ships, so it
imports nothing else from the project.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import Schema, TensorSpec

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "PROBABILITIES",
    "LABEL",
    "CLASS_NAMES",
    "OUTPUT_SCHEMA",
    "ServingInputError",
    "input_problem",
    "images_of",
    "in_batches",
    "model_output",
    "output_schema",
    "ServedOnnx",
]

INPUT_NAME = "images"  # the graph's input and the signature's input name
OUTPUT_NAME = "logits"  # the graph's output and the first output key
PROBABILITIES = "probabilities"
LABEL = "label"
CLASS_NAMES = "class_names"
OUTPUT_SCHEMA = {
    OUTPUT_NAME: "float32 (N, C): the network's raw scores",
    PROBABILITIES: "float32 (N, C): softmax of the logits",
    LABEL: "str (N,): the most probable class name of each image",
    CLASS_NAMES: "str (C,): the class of each column of logits and probabilities",
}
INPUT_RANGE = (0.0, 1.0)


class ServingInputError(MlflowException):
    """A request the model refuses (HTTP 400), with a message that never holds its values.

    mlflow 3.17's scoring server rewrites the message of an ``MlflowException`` raised by
    ``predict`` to ``Failed to predict data '<the request>' ...`` (``pyfunc/scoring_server``,
    ``invocations``), which would echo the request body back; this exception keeps the
    message it was created with.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property  # type: ignore[override]
    def message(self) -> str:
        return self._fixed_message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_fixed_message"):  # the first write (from __init__) wins
            self._fixed_message = value


def input_problem(images: np.ndarray, resolution: int) -> str | None:
    """What is wrong with ``images`` as model input (None if nothing): shape, dtype, values
    that are not finite or outside [0, 1]. Counts, never values."""
    low, high = INPUT_RANGE
    expected = f"expected float32 images shaped (N, 3, {resolution}, {resolution}), RGB in [0, 1]"
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, resolution, resolution):
        return f"images shaped {tuple(images.shape)}; {expected}"
    if not np.issubdtype(images.dtype, np.floating):
        return f"images of dtype {images.dtype}; {expected}"
    non_finite = images.size - int(np.count_nonzero(np.isfinite(images)))
    if non_finite:
        return f"images hold {non_finite} non-finite values (NaN or infinity); {expected}"
    outside = int(np.count_nonzero((images < low) | (images > high)))
    if outside:
        return (
            f"images hold {outside} of {images.size} values outside [0, 1] (0-255 pixels? "
            f"divide them by 255); {expected}"
        )
    return None


def images_of(model_input: Any, resolution: int) -> np.ndarray:
    """The checked float32 ``images`` array of a pyfunc input (an array, or a dict holding
    ``images``); :class:`ServingInputError` when it is not valid model input."""
    if isinstance(model_input, dict):
        if set(model_input) != {INPUT_NAME}:
            raise ServingInputError(
                f"input names {sorted(map(str, model_input))}; expected one input "
                f"{INPUT_NAME!r} shaped (N, 3, {resolution}, {resolution})"
            )
        model_input = model_input[INPUT_NAME]
    if not isinstance(model_input, np.ndarray):
        raise ServingInputError(
            f"input of type {type(model_input).__name__}; expected a float32 tensor "
            f"{INPUT_NAME!r} shaped (N, 3, {resolution}, {resolution})"
        )
    if (problem := input_problem(model_input, resolution)) is not None:
        raise ServingInputError(problem)
    return np.ascontiguousarray(model_input, dtype=np.float32)


def in_batches(
    run: Callable[[np.ndarray], np.ndarray], array: np.ndarray, *, batch_size: int
) -> np.ndarray:
    """``run`` over ``array`` (N, ...) in contiguous slices of at most ``batch_size`` rows,
    the results concatenated along the first axis (an engine's largest profile batch, a
    parity check's batch)."""
    parts = [
        run(np.ascontiguousarray(array[i : i + batch_size]))
        for i in range(0, len(array), batch_size)
    ]
    return np.concatenate(parts, axis=0)


def model_output(logits: np.ndarray, class_names: list[str]) -> dict[str, np.ndarray]:
    """The documented output (:data:`OUTPUT_SCHEMA`) for logits ``(N, C)``."""
    logits = np.asarray(logits, dtype=np.float32)
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probabilities = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    names = np.asarray(class_names, dtype=str)
    return {
        OUTPUT_NAME: logits,
        PROBABILITIES: probabilities,
        LABEL: names[np.argmax(logits, axis=1)] if len(logits) else names[:0],
        CLASS_NAMES: names,
    }


def output_schema(num_classes: int) -> Schema:
    """The output signature of :func:`model_output`."""
    scores = np.dtype(np.float32)
    return Schema(
        [
            TensorSpec(scores, (-1, num_classes), OUTPUT_NAME),
            TensorSpec(scores, (-1, num_classes), PROBABILITIES),
            TensorSpec(np.dtype(str), (-1,), LABEL),
            TensorSpec(np.dtype(str), (num_classes,), CLASS_NAMES),
        ]
    )


class ServedOnnx:
    """The ONNX model's pyfunc: MLflow's ONNX Runtime wrapper, checked input, full output."""

    def __init__(self, onnx_model: Any, class_names: list[str], resolution: int) -> None:
        self.onnx_model = onnx_model  # mlflow.onnx's pyfunc (providers from the MLmodel)
        self.class_names = list(class_names)
        self.resolution = int(resolution)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> dict:
        images = images_of(model_input, self.resolution)
        logits = self.onnx_model.predict({INPUT_NAME: images})[OUTPUT_NAME]
        return model_output(logits, self.class_names)


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> ServedOnnx:
    """Loader named in the ONNX model's ``python_function`` flavor (``model.onnx`` at
    ``path``; class names and resolution from the flavor's model config)."""
    import mlflow.onnx

    config = model_config or {}
    if CLASS_NAMES not in config or "resolution" not in config:
        raise MlflowException(
            f"the ONNX model at {path} has no class_names/resolution in its pyfunc model "
            "config; expected a model logged by export.flavors.log_onnx_model"
        )
    wrapper = mlflow.onnx._load_pyfunc(path)
    return ServedOnnx(wrapper, config[CLASS_NAMES], config["resolution"])
