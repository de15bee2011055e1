"""What each step hands to the next: its one output artifact, addressed as ``runs:/<id>/<path>``.

Steps take an earlier step's run id as a parameter (the MLproject's ``*_run_id``) and read
that run's output through :func:`output_uri`; no step names another step's paths.

- search_train: ``child/``, the derived child with its trained weights (architecture.json,
  weights.pt and meta.json, a ChildRecord with its test top-1/top-5), its per-class report
  and pictures;
- measure: ``table5/table5.md``, the paper's Table 5 on this machine (and table5.csv);
- export: ``exported.json``, the logged models:/ URIs and runtime reports per format;
- register: ``registered.json``, the registered versions (name, version, URI), skipped formats;
- compare: ``compare/compare.md``, the runs side by side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from dha_train.errors import UserError

__all__ = ["STEP_OUTPUTS", "output_uri", "download_output", "read_output_json"]

STEP_OUTPUTS: dict[str, str] = {
    "search_train": "child",
    "measure": "table5/table5.md",
    "export": "exported.json",
    "register": "registered.json",
    "compare": "compare/compare.md",
}


def output_uri(step: str, run_id: str) -> str:
    """``runs:/<run_id>/<the step's output>``."""
    return f"runs:/{run_id}/{STEP_OUTPUTS[step]}"


def download_output(step: str, run_id: str, *, part: str = "", dst: str | None = None) -> Path:
    """The step's output of run ``run_id``, or only the file ``part`` inside it, downloaded
    into ``dst`` (None: a folder MLflow chooses); UserError if the run has none."""
    what = f"{STEP_OUTPUTS[step]}/{part}" if part else STEP_OUTPUTS[step]
    uri = f"{output_uri(step, run_id)}/{part}" if part else output_uri(step, run_id)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst))
    except (MlflowException, OSError) as exc:
        raise UserError(
            f"run {run_id} has no {what} ({uri}): pass the run id of a FINISHED "
            f"{step} step ({type(exc).__name__})"
        ) from None


def read_output_json(step: str, run_id: str) -> dict[str, Any]:
    """A JSON output (export's exported.json, register's registered.json) as a dict."""
    return dict(json.loads(download_output(step, run_id).read_text()))
