"""MLflow run plumbing shared by every step: start or attach, tag, finish, fail, reuse.

A step run carries ``dha.step`` (its entry point) and ``dha.code_version`` (a hash of the
project's source), so that :func:`find_reusable_run` can find a FINISHED run of the same
step with the same parameters and code, as MLflow's multistep example does with the git
commit (a hash also covers uncommitted edits and installs without git).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

from dha_train.errors import UserError

__all__ = [
    "STEP_TAG",
    "CODE_TAG",
    "ERROR_TAG",
    "as_strings",
    "code_version",
    "default_tracking_uri",
    "step_run",
    "find_reusable_run",
    "project_root",
]

log = logging.getLogger(__name__)

STEP_TAG = "dha.step"
ERROR_TAG = "dha.error"
CODE_TAG = "dha.code_version"
_SOURCE_PACKAGES = ("dha_train", "export", "pipeline")


def project_root() -> Path:
    """The folder holding MLproject (the source checkout this package runs from)."""
    return Path(__file__).resolve().parents[1]


@cache
def code_version() -> str:
    """Short hash of every .py file of the three packages and of the MLproject file."""
    root = project_root()
    digest = hashlib.sha256()
    files = sorted(p for pkg in _SOURCE_PACKAGES for p in (root / pkg).rglob("*.py"))
    for path in [*files, root / "MLproject"]:
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else an absolute SQLite file in the current folder.

    Absolute, so that step processes started elsewhere see the same store and registry.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
        return uri
    return "sqlite:///" + str(Path.cwd() / "mlflow.db")


def as_strings(params: Mapping[str, Any]) -> dict[str, str]:
    """Parameters as MLflow stores them (strings; None = '')."""
    return {
        k: "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in params.items()
    }


@contextmanager
def step_run(step: str, params: Mapping[str, Any], *, nested: bool = False) -> Iterator[Run]:
    """Run the body inside the step's MLflow run; mark it FAILED on any exception.

    Attaches to the run that ``mlflow run`` created (MLFLOW_RUN_ID) or starts one.
    """
    tracking_uri = default_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # subprocesses (torchrun ranks) inherit it
    mlflow.enable_system_metrics_logging()
    active = mlflow.active_run()
    # a run that `mlflow run` or `dha run` created (MLFLOW_RUN_ID) keeps the name it was given
    name = None if os.environ.get("MLFLOW_RUN_ID") and not nested else step
    run = (
        active
        if active is not None and not nested
        else mlflow.start_run(run_name=name, nested=nested)
    )
    try:
        mlflow.set_tags({STEP_TAG: step, CODE_TAG: code_version()})
        # `mlflow run` logged the entry point's parameters already, as the user wrote them
        logged = MlflowClient().get_run(run.info.run_id).data.params
        mlflow.log_params({k: v for k, v in as_strings(params).items() if k not in logged})
        yield run
    except BaseException as exc:
        if isinstance(exc, UserError):  # the parent run reports the step's reason in one line
            mlflow.set_tag(ERROR_TAG, str(exc)[:5000])
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        raise
    mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))


def find_reusable_run(step: str, params: Mapping[str, Any], experiment_id: str) -> Run | None:
    """The newest FINISHED run of ``step`` with these parameters and this code version."""
    wanted = as_strings(params)
    client = MlflowClient()
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{STEP_TAG}` = '{step}' and tags.`{CODE_TAG}` = '{code_version()}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for run in runs:
        if all(run.data.params.get(k) == v for k, v in wanted.items()):
            return run
    return None
