"""MLflow models for the deployed network: ONNX via ``mlflow.onnx`` (here), TensorRT via its
own flavor module (:mod:`export.tensorrt_flavor`), and the metadata both record.

Both take float32 ``images`` shaped ``(N, 3, R, R)`` in [0, 1] and their pyfunc ``predict``
returns the same form, :data:`export.serving.OUTPUT_SCHEMA` (logits, probabilities, label,
class_names), and refuses other input with an HTTP 400, so a client switches formats by URI
alone. The ONNX model keeps MLflow's ``onnx`` flavor; its ``python_function`` flavor loads
through :mod:`export.serving`, the only project code it ships. Class names, the resolution
and the evaluation transform travel in the model's metadata (``class_names``,
``resolution``, ``format``, ``preprocess``: a :class:`dha_train.preprocess.Preprocess`
dict) and in the pyfunc model config; :func:`model_metadata` and :func:`model_preprocess`
read them back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow.models import Model, ModelSignature
from mlflow.models.model import MLMODEL_FILE_NAME, MODEL_CONFIG, ModelInfo
from mlflow.pyfunc import PyFuncModel
from mlflow.types import Schema, TensorSpec

from export import serving
from export.errors import ExportError
from export.onnx_export import onnx_execution_providers
from export.serving import CLASS_NAMES, INPUT_NAME, OUTPUT_NAME
from export.shipped_code import copy_modules, shipped_modules

__all__ = [
    "OUTPUT_KEY",
    "ONNX_SHA256",
    "model_signature",
    "model_metadata",
    "model_preprocess",
    "log_onnx_model",
    "format_metadata",
]

if TYPE_CHECKING:  # imported where used
    from dha_train.preprocess import Preprocess

logger = logging.getLogger(__name__)

OUTPUT_KEY = OUTPUT_NAME  # pyfunc predict returns {OUTPUT_KEY: logits, ...}
ONNX_SHA256 = "onnx_sha256"  # metadata key and registered-version tag


def model_signature(resolution: int, num_classes: int) -> ModelSignature:
    """``images`` float32 (-1, 3, R, R) -> :data:`export.serving.OUTPUT_SCHEMA`."""
    return ModelSignature(
        inputs=Schema(
            [TensorSpec(np.dtype(np.float32), (-1, 3, resolution, resolution), INPUT_NAME)]
        ),
        outputs=serving.output_schema(num_classes),
    )


def format_metadata(
    fmt: str, class_names: list[str], resolution: int, preprocess: Preprocess | None
) -> dict[str, Any]:
    """The metadata every format records (format, class names, resolution, preprocess,
    output schema); refuses empty or repeated class names and a preprocess of another size."""
    if not class_names or len(set(class_names)) != len(class_names):
        raise ExportError(
            f"class names {class_names[:5]}... are empty or repeated; expected one unique "
            "name per output; pass the dataset's class names"
        )
    from dha_train.preprocess import Preprocess

    preprocess = preprocess or Preprocess.centre_crop(resolution)
    if preprocess.resolution != resolution:
        raise ExportError(
            f"preprocess crops to {preprocess.resolution} px, but the model takes {resolution} "
            "px; pass the data bundle's preprocess for the model's resolution"
        )
    return {
        "format": fmt,
        "class_names": list(class_names),
        "resolution": int(resolution),
        "preprocess": preprocess.to_dict(),
        "output_schema": dict(serving.OUTPUT_SCHEMA),
    }


def model_metadata(pyfunc_model: PyFuncModel) -> dict[str, Any]:
    """The ``format``/``class_names``/``resolution``/``preprocess`` metadata of a model
    logged here."""
    meta = pyfunc_model.metadata.metadata or {}
    if "class_names" not in meta or "resolution" not in meta:
        raise ExportError(
            f"MLflow model {pyfunc_model.metadata.model_uuid} has no class_names/resolution "
            "metadata; expected a model logged by export.flavors; log it with log_onnx_model"
        )
    return meta


def model_preprocess(meta: dict[str, Any]) -> Preprocess:
    """The evaluation transform recorded in a model's metadata (a model logged before it was
    recorded: resize the shorter side to its resolution and crop the centre)."""
    from dha_train.preprocess import Preprocess

    if "preprocess" not in meta:
        logger.warning("model records no preprocess; resizing to %s px", meta["resolution"])
        return Preprocess.centre_crop(int(meta["resolution"]))
    return Preprocess.from_dict(meta["preprocess"])


def _served_code(folder: Path) -> Path:
    """``folder/export`` holding what the ONNX pyfunc imports: :mod:`export.serving` and
    what it imports from the project (:func:`export.shipped_code.shipped_modules`)."""
    copy_modules(shipped_modules(serving.__name__), folder)
    return folder / "export"


def _save_onnx_model(
    path: str,
    mlflow_model: Model,
    *,
    class_names: list[str],
    resolution: int,
    **kwargs: Any,
) -> None:
    """``mlflow.onnx.save_model``, then the pyfunc flavor loads through export.serving with
    the class names and resolution as its model config."""
    with tempfile.TemporaryDirectory() as tmp:
        code = _served_code(Path(tmp))
        mlflow.onnx.save_model(
            path=path, mlflow_model=mlflow_model, code_paths=[str(code)], **kwargs
        )
    conf = mlflow_model.flavors["python_function"]
    conf["loader_module"] = serving.__name__
    conf[MODEL_CONFIG] = {CLASS_NAMES: list(class_names), "resolution": int(resolution)}
    mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))


# a flavor module for Model.log: mlflow.onnx's files, export.serving's pyfunc
_ONNX_FLAVOR = SimpleNamespace(__name__="mlflow.onnx", save_model=_save_onnx_model)


def log_onnx_model(
    onnx_path: Path,
    *,
    name: str,
    class_names: list[str],
    resolution: int,
    providers: list[str] | None = None,
    input_example: np.ndarray | None = None,
    preprocess: Preprocess | None = None,
) -> ModelInfo:
    """Log ``onnx_path`` as an MLflow ONNX model (a LoggedModel) in the active run, with the
    sha256 of the file it writes in its metadata (``onnx_sha256``, checked on load), and
    ``input_example`` (float32 (N, 3, R, R) in [0, 1], e.g. one real image) as its example.
    ``preprocess``: the evaluation transform (default: resize to ``resolution``, centre crop).

    ``providers`` default to :func:`onnx_execution_providers` of this machine (CUDA only
    where present; the onnx flavor's default lists CUDA everywhere and warns on CPU).
    """
    import onnx

    proto = onnx.load(str(onnx_path))
    # the flavor writes proto.SerializeToString() as model.onnx: its sha256 is the file's
    sha256 = hashlib.sha256(proto.SerializeToString()).hexdigest()
    info = Model.log(
        artifact_path=None,
        name=name,
        flavor=_ONNX_FLAVOR,
        onnx_model=proto,
        class_names=class_names,
        resolution=resolution,
        signature=model_signature(resolution, len(class_names)),
        onnx_execution_providers=providers or onnx_execution_providers(),
        metadata={
            **format_metadata("onnx", class_names, resolution, preprocess),
            ONNX_SHA256: sha256,
        },
        save_as_external_data=False,
        input_example=None if input_example is None else {INPUT_NAME: input_example},
    )
    logger.info("logged ONNX model %s as %s", onnx_path, info.model_uri)
    return info
