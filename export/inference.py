"""Models fetched for inference: ``models:/<name>@<alias>`` -> a callable on images or tensors.

Works for any model logged by :mod:`export.flavors` (ONNX or TensorRT): both return
:data:`export.serving.OUTPUT_SCHEMA` and carry ``class_names``, ``resolution`` and
``preprocess`` in their metadata. Image files and PIL images go through the recorded
:class:`dha_train.preprocess.Preprocess`, the transform evaluation used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.models import Model
from mlflow.pyfunc import PyFuncModel
from PIL import Image

from dha_train.preprocess import Preprocess
from export.engine_sidecar import sha256_of
from export.errors import ExportError
from export.flavors import ONNX_SHA256, OUTPUT_KEY, model_metadata, model_preprocess
from export.serving import PROBABILITIES, input_problem, model_output

__all__ = ["Classifier", "ImageInput", "load_classifier", "load_images", "format_predictions"]

logger = logging.getLogger(__name__)

ImageInput = Sequence[str | Path | Image.Image] | torch.Tensor | np.ndarray


def load_images(items: Sequence[str | Path | Image.Image], preprocess: Preprocess) -> np.ndarray:
    """Image files or PIL images -> float32 ``(N, 3, R, R)`` in [0, 1] through ``preprocess``
    (the model's evaluation transform: RGB, resize, centre crop, / 255)."""
    resolution = preprocess.resolution
    arrays = []
    for item in items:
        if isinstance(item, Image.Image):
            image = item
        else:
            try:
                image = Image.open(item)
            except (FileNotFoundError, OSError) as exc:
                raise ExportError(
                    f"cannot read image {item}: {exc.__class__.__name__}; expected a readable "
                    "image file (PNG, JPEG, ...); check the path"
                ) from exc
        arrays.append(preprocess.unit_float(image).numpy())
    return np.stack(arrays) if arrays else np.zeros((0, 3, resolution, resolution), np.float32)


class Classifier:
    """A registered model with its class names and evaluation transform; call it for
    probabilities ``(N, classes)``."""

    def __init__(self, model: PyFuncModel, class_names: list[str], preprocess: Preprocess) -> None:
        self.model = model
        self.class_names = list(class_names)
        self.preprocess = preprocess
        self.resolution = preprocess.resolution

    def to_array(self, inputs: ImageInput) -> np.ndarray:
        """Paths / PIL images / tensor / array -> float32 ``(N, 3, R, R)``."""
        if isinstance(inputs, torch.Tensor):
            array = inputs.detach().cpu().float().numpy()
        elif isinstance(inputs, np.ndarray):
            array = inputs.astype(np.float32, copy=False)
        else:
            array = load_images(inputs, self.preprocess)
        if (problem := input_problem(array, self.resolution)) is not None:
            raise ExportError(f"model input: {problem}; pass image paths to have them resized")
        return np.ascontiguousarray(array)

    def predict(self, inputs: ImageInput) -> dict[str, np.ndarray]:
        """The served model's output (:data:`export.serving.OUTPUT_SCHEMA`)."""
        array = self.to_array(inputs)
        if len(array) == 0:
            return model_output(np.zeros((0, len(self.class_names)), np.float32), self.class_names)
        output: Any = self.model.predict(array)
        if PROBABILITIES not in output:  # a model logged before the full output
            output = model_output(output[OUTPUT_KEY], self.class_names)
        return output

    def logits(self, inputs: ImageInput) -> np.ndarray:
        """Raw logits ``(N, classes)``."""
        return np.asarray(self.predict(inputs)[OUTPUT_KEY], dtype=np.float32)

    def __call__(self, inputs: ImageInput) -> np.ndarray:
        """Class probabilities ``(N, classes)``."""
        return np.asarray(self.predict(inputs)[PROBABILITIES], dtype=np.float32)

    def topk(self, inputs: ImageInput, k: int = 5) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable classes per input, most probable first."""
        probs = self(inputs)
        k = max(1, min(k, len(self.class_names)))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [
            [(self.class_names[j], float(row[j])) for j in idx]
            for row, idx in zip(probs, order, strict=True)
        ]


def _registered_tag(model_uri: str, key: str) -> str | None:
    """Tag ``key`` of the registered version a ``models:/<name>/<version>`` or
    ``models:/<name>@<alias>`` URI names (None for other URIs or an absent tag)."""
    if not model_uri.startswith("models:/"):
        return None
    rest = model_uri.removeprefix("models:/").strip("/")
    client = MlflowClient()
    if "@" in rest:
        name, alias = rest.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in rest:
        name, number = rest.split("/", 1)
        version = client.get_model_version(name, number)
    else:  # models:/<logged model id>: not a registered version
        return None
    return version.tags.get(key)


def _check_onnx_file(model_uri: str, local: Path) -> None:
    """The ONNX file must hash to the sha256 recorded in its metadata and, for a registered
    version, in the version's tag (ExportError naming both on a mismatch)."""
    mlmodel = Model.load(str(local))
    conf = mlmodel.flavors.get("onnx")
    if conf is None:
        return
    actual = sha256_of(local / conf["data"])
    recorded = {
        "its MLmodel metadata": (mlmodel.metadata or {}).get(ONNX_SHA256),
        "the registered version's tag": _registered_tag(model_uri, ONNX_SHA256),
    }
    if not any(recorded.values()):
        logger.warning("%s records no %s; its ONNX file is not checked", model_uri, ONNX_SHA256)
    for where, expected in recorded.items():
        if expected and expected != actual:
            raise ExportError(
                f"the ONNX file of {model_uri} has sha256 {actual[:16]}..., but {where} "
                f"records {expected[:16]}...; the file was changed after registration; "
                "re-export and register the model"
            )


def load_classifier(model_uri: str) -> Classifier:
    """Load ``models:/<name>@<alias>`` (or any MLflow model URI) as a :class:`Classifier`,
    after checking the ONNX file against the sha256 recorded for it."""
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    _check_onnx_file(model_uri, local)
    model = mlflow.pyfunc.load_model(str(local))
    meta = model_metadata(model)
    logger.info(
        "loaded %s (%s, %d classes)", model_uri, meta.get("format"), len(meta["class_names"])
    )
    return Classifier(model, meta["class_names"], model_preprocess(meta))


def format_predictions(
    paths: Sequence[str | Path], topk_results: Sequence[Sequence[tuple[str, float]]]
) -> str:
    """Lines ``<path>: <class> 0.912, <class> 0.051, ...`` (what ``dha predict`` prints)."""
    lines = []
    for path, ranked in zip(paths, topk_results, strict=True):
        ranked_text = ", ".join(f"{name} {prob:.3f}" for name, prob in ranked)
        lines.append(f"{path}: {ranked_text}")
    return "\n".join(lines)
