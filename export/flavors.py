"""MLflow models for the deployed network: ONNX via ``mlflow.onnx``, TensorRT via a pyfunc.

Both take float32 ``images`` shaped ``(N, 3, R, R)`` in [0, 1] and their pyfunc ``predict``
returns the same form, ``{"logits": float32 ndarray (N, classes)}``, so a client switches
formats by URI alone. Class names and the resolution travel in the model's metadata
(``class_names``, ``resolution``, ``format``); :func:`model_metadata` reads them back.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.pyfunc import PyFuncModel, PythonModel, PythonModelContext
from mlflow.types import Schema, TensorSpec

from export.engine_sidecar import EngineFiles, read_sidecar
from export.errors import ExportError
from export.onnx_export import INPUT_NAME, OUTPUT_NAME, onnx_execution_providers

__all__ = [
    "OUTPUT_KEY",
    "ONNX_SHA256",
    "model_signature",
    "model_metadata",
    "log_onnx_model",
    "TensorRTPyfunc",
    "log_tensorrt_model",
]

logger = logging.getLogger(__name__)

OUTPUT_KEY = OUTPUT_NAME  # pyfunc predict returns {OUTPUT_KEY: logits}
ONNX_SHA256 = "onnx_sha256"  # metadata key and registered-version tag
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def model_signature(resolution: int, num_classes: int) -> ModelSignature:
    """``images`` float32 (-1, 3, R, R) -> ``logits`` float32 (-1, classes)."""
    return ModelSignature(
        inputs=Schema(
            [TensorSpec(np.dtype(np.float32), (-1, 3, resolution, resolution), INPUT_NAME)]
        ),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes), OUTPUT_NAME)]),
    )


def _metadata(fmt: str, class_names: list[str], resolution: int) -> dict[str, Any]:
    if not class_names or len(set(class_names)) != len(class_names):
        raise ExportError(
            f"class names {class_names[:5]}... are empty or repeated; expected one unique "
            "name per output; pass the dataset's class names"
        )
    return {"format": fmt, "class_names": list(class_names), "resolution": int(resolution)}


def model_metadata(pyfunc_model: PyFuncModel) -> dict[str, Any]:
    """The ``format``/``class_names``/``resolution`` metadata of a model logged here."""
    meta = pyfunc_model.metadata.metadata or {}
    if "class_names" not in meta or "resolution" not in meta:
        raise ExportError(
            f"MLflow model {pyfunc_model.metadata.model_uuid} has no class_names/resolution "
            "metadata; expected a model logged by export.flavors; log it with log_onnx_model"
        )
    return meta


def log_onnx_model(
    onnx_path: Path,
    *,
    name: str,
    class_names: list[str],
    resolution: int,
    providers: list[str] | None = None,
    input_example: np.ndarray | None = None,
) -> ModelInfo:
    """Log ``onnx_path`` as an MLflow ONNX model (a LoggedModel) in the active run, with the
    sha256 of the file it writes in its metadata (``onnx_sha256``, checked on load), and
    ``input_example`` (float32 (N, 3, R, R) in [0, 1], e.g. one real image) as its example.

    ``providers`` default to :func:`onnx_execution_providers` of this machine (CUDA only
    where present; the onnx flavor's default lists CUDA everywhere and warns on CPU).
    """
    import onnx

    proto = onnx.load(str(onnx_path))
    # the flavor writes proto.SerializeToString() as model.onnx: its sha256 is the file's
    sha256 = hashlib.sha256(proto.SerializeToString()).hexdigest()
    info = mlflow.onnx.log_model(
        proto,
        name=name,
        signature=model_signature(resolution, len(class_names)),
        onnx_execution_providers=providers or onnx_execution_providers(),
        metadata={**_metadata("onnx", class_names, resolution), ONNX_SHA256: sha256},
        save_as_external_data=False,
        input_example=None if input_example is None else {INPUT_NAME: input_example},
    )
    logger.info("logged ONNX model %s as %s", onnx_path, info.model_uri)
    return info


class TensorRTPyfunc(PythonModel):
    """Pyfunc around :class:`export.tensorrt_engine.TensorRTRunner` (artifacts: plan, sidecar).

    ``mlflow models serve`` answers requests in threads, and a TensorRT execution context
    holds one input shape and one set of tensor addresses at a time: requests take turns on
    it under a lock (one engine, one context, one stream per loaded model).
    """

    def load_context(self, context: PythonModelContext) -> None:
        """Check the sidecar against this machine and deserialise the engine."""
        from export.tensorrt_engine import TensorRTRunner

        self.serve_with(
            TensorRTRunner(
                Path(context.artifacts["plan"]), sidecar_path=Path(context.artifacts["sidecar"])
            )
        )

    def serve_with(self, runner: Callable[[np.ndarray], np.ndarray]) -> None:
        """Answer requests with ``runner`` (the engine runner; a stand-in in CPU tests)."""
        self._runner = runner
        self._lock = threading.Lock()

    def predict(
        self,
        context: PythonModelContext,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> dict[str, np.ndarray]:
        """``{"logits": (N, classes)}`` for ``images`` (N, 3, R, R)."""
        images = model_input[INPUT_NAME] if isinstance(model_input, dict) else model_input
        array = np.asarray(images, dtype=np.float32)
        with self._lock:
            logits = self._runner(array)
        return {OUTPUT_KEY: logits}


def log_tensorrt_model(
    engine_files: EngineFiles, *, name: str, class_names: list[str], resolution: int
) -> ModelInfo:
    """Log a TensorRT plan and its sidecar as a pyfunc model in the active run.

    No input example: MLflow would load and run the model while logging, which needs the
    GPU that built it. The ``export`` and ``dha_train`` packages travel as code paths.
    """
    sidecar = read_sidecar(engine_files.plan, engine_files.sidecar)
    if sidecar.resolution != resolution:
        raise ExportError(
            f"TensorRT engine {engine_files.plan} was built at resolution {sidecar.resolution}, "
            f"but resolution {resolution} was given; pass the engine's resolution"
        )
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=TensorRTPyfunc(),
        artifacts={"plan": str(engine_files.plan), "sidecar": str(engine_files.sidecar)},
        signature=model_signature(resolution, len(class_names)),
        pip_requirements=[
            f"tensorrt=={sidecar.tensorrt_version}",
            f"mlflow=={mlflow.__version__}",
            f"torch=={_version('torch')}",
            f"numpy=={np.__version__}",
        ],
        code_paths=[str(_PROJECT_ROOT / "export"), str(_PROJECT_ROOT / "dha_train")],
        metadata={
            **_metadata("tensorrt", class_names, resolution),
            "tensorrt_version": sidecar.tensorrt_version,
            "gpu_name": sidecar.gpu_name,
            "compute_capability": sidecar.compute_capability,
            "precision": sidecar.precision,
        },
    )
    logger.info("logged TensorRT model %s as %s", engine_files.plan, info.model_uri)
    return info


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package).split("+")[0]
