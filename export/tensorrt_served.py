"""The TensorRT model's pyfunc: the loader its ``python_function`` flavor names.

``mlflow models serve`` answers requests in threads, and a TensorRT execution context holds
one input shape and one set of tensor addresses at a time: requests take turns on it under a
lock (one engine, one context, one stream per loaded model). Class names and resolution come
from the pyfunc model config; the answer is :data:`export.serving.OUTPUT_SCHEMA`, as for ONNX.
This file and what it imports from the project are all the code a TensorRT model ships
(:func:`export.shipped_code.shipped_modules`), so it imports nothing heavier.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.exceptions import MlflowException

from export.engine_sidecar import sidecar_path_for
from export.serving import CLASS_NAMES, images_of, model_output

__all__ = ["ServedTensorRT"]


class ServedTensorRT:
    """Checked input, one engine call at a time, the served output."""

    def __init__(
        self, runner: Callable[[np.ndarray], np.ndarray], class_names: list[str], resolution: int
    ) -> None:
        self.runner = runner  # export.tensorrt_runtime.TensorRTRunner (a stand-in in CPU tests)
        self.class_names = list(class_names)
        self.resolution = int(resolution)
        self._lock = threading.Lock()

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> dict:
        """:data:`export.serving.OUTPUT_SCHEMA` for ``images`` (N, 3, R, R) in [0, 1]."""
        images = images_of(model_input, self.resolution)
        with self._lock:
            logits = self.runner(images)
        return model_output(logits, self.class_names)


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> ServedTensorRT:
    """Loader named in the TensorRT model's ``python_function`` flavor: ``path`` is the plan
    (its sidecar beside it); class names and resolution from the flavor's model config."""
    from export.tensorrt_runtime import TensorRTRunner

    config = model_config or {}
    if CLASS_NAMES not in config or "resolution" not in config:
        raise MlflowException(
            f"the TensorRT model at {path} has no class_names/resolution in its pyfunc model "
            "config; expected a model logged by export.tensorrt_flavor.log_model"
        )
    plan = Path(path)
    runner = TensorRTRunner(plan, sidecar_path=sidecar_path_for(plan))
    return ServedTensorRT(runner, config[CLASS_NAMES], config["resolution"])
