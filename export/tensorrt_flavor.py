"""TensorRT as an MLflow model flavor, in MLflow's own shape (``mlflow/onnx/__init__.py``).

A saved model directory holds ``model.plan`` and its sidecar ``model.plan.json`` (TensorRT
version, GPU, precision, shapes, sha256), ``code/`` with only the project modules its loader
imports (:func:`export.shipped_code.shipped_modules` of :data:`LOADER_MODULE`), and
requirements derived from the imports of that code, each pinned to its installed version
(``tensorrt`` to the version that built the plan). The MLmodel file records the
``tensorrt`` flavor (files, versions, precision, GPU) and a ``python_function`` flavor that
loads through :mod:`export.tensorrt_served` and answers :data:`export.serving.OUTPUT_SCHEMA`.
The metadata holds what :func:`export.flavors.model_metadata` reads (class names,
resolution, preprocess) and the engine's versions. No input example: MLflow would run the
model while logging, which needs the GPU that built it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from mlflow.models import Model, ModelSignature
from mlflow.models.model import MLMODEL_FILE_NAME, ModelInfo
from mlflow.utils.environment import (
    _CONDA_ENV_FILE_NAME,
    _CONSTRAINTS_FILE_NAME,
    _PYTHON_ENV_FILE_NAME,
    _REQUIREMENTS_FILE_NAME,
    _process_pip_requirements,
    _PythonEnv,
)
from mlflow.utils.file_utils import write_to
from mlflow.utils.model_utils import (
    _get_flavor_configuration,
    _validate_and_prepare_target_save_path,
)

from export import tensorrt_served
from export.engine_sidecar import EngineFiles, read_sidecar, sidecar_path_for
from export.errors import ExportError
from export.serving import CLASS_NAMES
from export.shipped_code import copy_modules, pip_requirements, shipped_modules

if TYPE_CHECKING:
    from dha_train.preprocess import Preprocess
    from export.tensorrt_runtime import TensorRTRunner

__all__ = [
    "FLAVOR_NAME",
    "LOADER_MODULE",
    "get_default_pip_requirements",
    "save_model",
    "log_model",
    "load_model",
]

logger = logging.getLogger(__name__)

FLAVOR_NAME = "tensorrt"
LOADER_MODULE = tensorrt_served.__name__  # the python_function loader, shipped with its imports
PLAN_FILE = "model.plan"
CODE_DIR = "code"


def get_default_pip_requirements(tensorrt_version: str) -> list[str]:
    """The requirements of the shipped code: its third-party imports, pinned."""
    return _requirements(shipped_modules(LOADER_MODULE), tensorrt_version)


def _requirements(modules: tuple[str, ...], tensorrt_version: str) -> list[str]:
    return pip_requirements(modules, pinned={"tensorrt": f"tensorrt=={tensorrt_version}"})


def save_model(
    engine_files: EngineFiles,
    path: str | os.PathLike,
    *,
    class_names: list[str],
    resolution: int,
    preprocess: Preprocess | None = None,
    mlflow_model: Model | None = None,
    signature: ModelSignature | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Save a TensorRT plan and its sidecar as an MLflow model at ``path`` (a new folder).

    ``preprocess``: the evaluation transform (default: resize to ``resolution``, centre
    crop); ``signature`` defaults to :func:`export.flavors.model_signature`.
    """
    from export.flavors import format_metadata, model_signature

    sidecar = read_sidecar(engine_files.plan, engine_files.sidecar)
    if sidecar.resolution != resolution:
        raise ExportError(
            f"TensorRT engine {engine_files.plan} was built at resolution {sidecar.resolution}, "
            f"but resolution {resolution} was given; pass the engine's resolution"
        )
    path = os.path.abspath(path)
    _validate_and_prepare_target_save_path(path)
    root = Path(path)
    shutil.copy2(engine_files.plan, root / PLAN_FILE)
    shutil.copy2(engine_files.sidecar, sidecar_path_for(root / PLAN_FILE))
    modules = shipped_modules(LOADER_MODULE)
    copy_modules(modules, root / CODE_DIR)

    mlflow_model = mlflow_model or Model()
    mlflow_model.signature = signature or model_signature(resolution, len(class_names))
    mlflow_model.metadata = {
        **(mlflow_model.metadata or {}),
        **(metadata or {}),
        **format_metadata("tensorrt", class_names, resolution, preprocess),
        "tensorrt_version": sidecar.tensorrt_version,
        "gpu_name": sidecar.gpu_name,
        "compute_capability": sidecar.compute_capability,
        "precision": sidecar.precision,
    }
    mlflow_model.add_flavor(
        FLAVOR_NAME,
        plan=PLAN_FILE,
        sidecar=sidecar_path_for(Path(PLAN_FILE)).name,
        tensorrt_version=sidecar.tensorrt_version,
        cuda_version=sidecar.cuda_version,
        precision=sidecar.precision,
        gpu_name=sidecar.gpu_name,
        compute_capability=sidecar.compute_capability,
        code=CODE_DIR,
        shipped_modules=list(modules),
    )
    import mlflow.pyfunc

    mlflow.pyfunc.add_to_model(
        mlflow_model,
        loader_module=LOADER_MODULE,
        data=PLAN_FILE,
        code=CODE_DIR,
        conda_env=_CONDA_ENV_FILE_NAME,
        python_env=_PYTHON_ENV_FILE_NAME,
        model_config={CLASS_NAMES: list(class_names), "resolution": int(resolution)},
    )
    mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))
    _write_environment(path, _requirements(modules, sidecar.tensorrt_version))


def _write_environment(path: str, requirements: list[str]) -> None:
    """requirements.txt, python_env.yaml and conda.yaml, as mlflow.onnx writes them."""
    conda_env, pip_reqs, constraints = _process_pip_requirements(requirements)
    with open(os.path.join(path, _CONDA_ENV_FILE_NAME), "w") as f:
        yaml.safe_dump(conda_env, stream=f, default_flow_style=False)
    if constraints:
        write_to(os.path.join(path, _CONSTRAINTS_FILE_NAME), "\n".join(constraints))
    write_to(os.path.join(path, _REQUIREMENTS_FILE_NAME), "\n".join(pip_reqs))
    _PythonEnv.current().to_yaml(os.path.join(path, _PYTHON_ENV_FILE_NAME))


def log_model(
    engine_files: EngineFiles,
    *,
    name: str,
    class_names: list[str],
    resolution: int,
    preprocess: Preprocess | None = None,
    signature: ModelSignature | None = None,
    metadata: dict[str, Any] | None = None,
    registered_model_name: str | None = None,
) -> ModelInfo:
    """Log the plan and sidecar as a TensorRT model (a LoggedModel) in the active run."""
    info = Model.log(
        artifact_path=None,
        name=name,
        flavor=sys.modules[__name__],
        registered_model_name=registered_model_name,
        engine_files=engine_files,
        class_names=class_names,
        resolution=resolution,
        preprocess=preprocess,
        signature=signature,
        metadata=metadata,
    )
    logger.info("logged TensorRT model %s as %s", engine_files.plan, info.model_uri)
    return info


def load_model(model_uri: str, dst_path: str | None = None) -> TensorRTRunner:
    """The engine runner of a TensorRT model (checks the sidecar against this machine)."""
    from mlflow.tracking.artifact_utils import _download_artifact_from_uri

    from export.tensorrt_runtime import TensorRTRunner

    local = Path(_download_artifact_from_uri(model_uri, output_path=dst_path))
    conf = _get_flavor_configuration(str(local), FLAVOR_NAME)
    return TensorRTRunner(local / conf["plan"], sidecar_path=local / conf["sidecar"])


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> Any:
    """MLflow's pyfunc hook for this flavor; saved models name the shipped
    :mod:`export.tensorrt_served` as their loader, which this calls."""
    return tensorrt_served._load_pyfunc(path, model_config)
