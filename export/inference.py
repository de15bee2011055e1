"""Models fetched for inference: ``models:/<name>@<alias>`` -> a callable on images or tensors.

Works for any model logged by :mod:`export.flavors` (ONNX or TensorRT): both return
``{"logits": ...}`` and carry ``class_names`` and ``resolution`` in their metadata.
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

from export.engine_sidecar import sha256_of
from export.errors import ExportError
from export.flavors import ONNX_SHA256, OUTPUT_KEY, model_metadata

__all__ = ["Classifier", "ImageInput", "load_classifier", "load_images", "format_predictions"]

logger = logging.getLogger(__name__)

ImageInput = Sequence[str | Path | Image.Image] | torch.Tensor | np.ndarray


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def load_images(items: Sequence[str | Path | Image.Image], resolution: int) -> np.ndarray:
    """Image files or PIL images -> float32 ``(N, 3, R, R)`` in [0, 1] (RGB, resized)."""
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
        resized = image.convert("RGB").resize((resolution, resolution), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0)
    return np.stack(arrays) if arrays else np.zeros((0, 3, resolution, resolution), np.float32)


class Classifier:
    """A registered model with its class names; call it for probabilities ``(N, classes)``."""

    def __init__(self, model: PyFuncModel, class_names: list[str], resolution: int) -> None:
        self.model = model
        self.class_names = list(class_names)
        self.resolution = int(resolution)

    def to_array(self, inputs: ImageInput) -> np.ndarray:
        """Paths / PIL images / tensor / array -> float32 ``(N, 3, R, R)``."""
        if isinstance(inputs, torch.Tensor):
            array = inputs.detach().cpu().float().numpy()
        elif isinstance(inputs, np.ndarray):
            array = inputs.astype(np.float32, copy=False)
        else:
            array = load_images(inputs, self.resolution)
        expected = (3, self.resolution, self.resolution)
        if array.ndim != 4 or tuple(array.shape[1:]) != expected:
            raise ExportError(
                f"model input shaped {tuple(array.shape)}; expected (N, 3, {self.resolution}, "
                f"{self.resolution}) float32 in [0, 1]; pass image paths to have them resized"
            )
        return np.ascontiguousarray(array)

    def logits(self, inputs: ImageInput) -> np.ndarray:
        """Raw logits ``(N, classes)``."""
        array = self.to_array(inputs)
        if len(array) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        output: Any = self.model.predict(array)
        return np.asarray(output[OUTPUT_KEY], dtype=np.float32)

    def __call__(self, inputs: ImageInput) -> np.ndarray:
        """Class probabilities ``(N, classes)``."""
        return _softmax(self.logits(inputs).astype(np.float64)).astype(np.float32)

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
    return Classifier(model, meta["class_names"], meta["resolution"])


def format_predictions(
    paths: Sequence[str | Path], topk_results: Sequence[Sequence[tuple[str, float]]]
) -> str:
    """Lines ``<path>: <class> 0.912, <class> 0.051, ...`` (what ``dha predict`` prints)."""
    lines = []
    for path, ranked in zip(paths, topk_results, strict=True):
        ranked_text = ", ".join(f"{name} {prob:.3f}" for name, prob in ranked)
        lines.append(f"{path}: {ranked_text}")
    return "\n".join(lines)
