"""MLflow run plumbing shared by every step: start or attach, tag, finish, fail, reuse.

A step run carries ``dha.step`` (its entry point) and ``dha.code_version`` (a hash of the
project's source), so that :func:`find_reusable_run` can find a FINISHED run of the same
step with the same parameters and code, as MLflow's multistep example does with the git
commit (a hash also covers uncommitted edits and installs without git).

It also carries ``dha.host`` and ``dha.pid``, the process that owns it. A RUNNING run whose
process is gone from this host (killed, out of memory, power cut) is an orphan:
:func:`retire_orphans` marks it FAILED with ``dha.replaced_by`` naming the run that took over,
and :func:`find_resumable_run` finds an interrupted run of a step that a rerun continues.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

from dha_train.engine.distributed import inside_torchrun
from dha_train.errors import DiskFullError, UserError

__all__ = [
    "STEP_TAG",
    "CODE_TAG",
    "ERROR_TAG",
    "REPLACED_TAG",
    "as_strings",
    "code_version",
    "default_tracking_uri",
    "step_run",
    "find_reusable_run",
    "find_resumable_run",
    "retire_orphans",
    "reopen_run",
    "project_root",
]

log = logging.getLogger(__name__)

STEP_TAG = "dha.step"
ERROR_TAG = "dha.error"
CODE_TAG = "dha.code_version"
HOST_TAG = "dha.host"
PID_TAG = "dha.pid"
REPLACED_TAG = "dha.replaced_by"
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
        if not inside_torchrun():  # the launcher owns a torchrun step's run, not its ranks
            mlflow.set_tags({HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())})
        # `mlflow run` logged the entry point's parameters already, as the user wrote them
        logged = MlflowClient().get_run(run.info.run_id).data.params
        mlflow.log_params({k: v for k, v in as_strings(params).items() if k not in logged})
        yield run
    except BaseException as exc:
        error = _disk_full(exc)
        if isinstance(error, UserError):  # the parent run reports the step's reason in one line
            mlflow.set_tag(ERROR_TAG, str(error)[:5000])
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        if error is not exc:
            raise error from exc
        raise
    mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))


def _disk_full(exc: BaseException) -> BaseException:
    """An ENOSPC while logging (artifacts, metrics to a local store) as one clear line."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        where = f" writing {exc.filename}" if exc.filename else ""
        return DiskFullError(
            f"no space left on the device{where}; the run is marked FAILED and its checkpoints "
            "are kept: free space and rerun to resume"
        )
    return exc


def _step_runs(step: str, params: Mapping[str, Any], experiment_id: str, status: str) -> list[Run]:
    """Runs of ``step`` with these parameters and this code version, newest first.

    ``status``: a condition on ``attributes.status`` (e.g. ``= 'FINISHED'``).
    """
    wanted = as_strings(params)
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{STEP_TAG}` = '{step}' and tags.`{CODE_TAG}` = '{code_version()}' "
        f"and attributes.status {status}",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    return [r for r in runs if all(r.data.params.get(k) == v for k, v in wanted.items())]


def find_reusable_run(step: str, params: Mapping[str, Any], experiment_id: str) -> Run | None:
    """The newest FINISHED run of ``step`` with these parameters and this code version."""
    return next(iter(_step_runs(step, params, experiment_id, "= 'FINISHED'")), None)


def _process_gone(host: str | None, pid: str | None) -> bool:
    """Whether the process ``pid`` on ``host`` has ended (unknowable for another host)."""
    if host != socket.gethostname() or not (pid or "").isdigit():
        return False
    try:  # a zombie (killed, not yet reaped) has ended too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        pass
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _orphans(experiment_id: str) -> list[Run]:
    runs = MlflowClient().search_runs(
        [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    return [
        r
        for r in runs
        if STEP_TAG in r.data.tags
        and _process_gone(r.data.tags.get(HOST_TAG), r.data.tags.get(PID_TAG))
    ]


def retire_orphans(experiment_id: str, replaced_by: str) -> list[Run]:
    """Mark every orphaned run of the experiment FAILED, tagged with ``replaced_by``."""
    client = MlflowClient()
    orphans = _orphans(experiment_id)
    for run in orphans:
        tags = run.data.tags
        reason = (
            f"interrupted: its process {tags[PID_TAG]} on {tags[HOST_TAG]} ended without "
            f"closing the run; run {replaced_by} took over"
        )
        client.set_tag(run.info.run_id, ERROR_TAG, reason)
        client.set_tag(run.info.run_id, REPLACED_TAG, replaced_by)
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
        log.warning("%s run %s %s", tags[STEP_TAG], run.info.run_id, reason)
    return orphans


def find_resumable_run(
    step: str, params: Mapping[str, Any], experiment_id: str, resumable: Callable[[Run], bool]
) -> Run | None:
    """The newest interrupted run of ``step`` (orphaned, or FAILED) that ``resumable`` accepts.

    Same parameters and code version, in this experiment of this store.
    """
    for run in _step_runs(step, params, experiment_id, "!= 'FINISHED'"):
        tags = run.data.tags
        interrupted = run.info.status == "FAILED" or (
            run.info.status == "RUNNING" and _process_gone(tags.get(HOST_TAG), tags.get(PID_TAG))
        )
        if interrupted and resumable(run):
            return run
    return None


def reopen_run(run_id: str, parent_id: str | None = None) -> None:
    """Make an interrupted run RUNNING again, owned by this process, for a rerun to continue.

    Its failure tags go; with ``parent_id`` it moves under the main run that continues it.
    """
    client = MlflowClient()
    tags = client.get_run(run_id).data.tags
    for tag in (ERROR_TAG, REPLACED_TAG):
        if tag in tags:
            client.delete_tag(run_id, tag)
    if parent_id is not None:
        client.set_tag(run_id, "mlflow.parentRunId", parent_id)
    client.set_tag(run_id, HOST_TAG, socket.gethostname())
    client.set_tag(run_id, PID_TAG, str(os.getpid()))
    client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
