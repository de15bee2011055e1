"""Run ids as users type them: the full 32 characters, or the short prefix tables print.

Every command that takes a run id resolves it here, so that ``dha compare --run-ids
210f9f51`` works with the 8 characters the compare table shows, and an id that names no run
(or several) is one line that says so.
"""

from __future__ import annotations

import re

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from dha_train.errors import UserError

__all__ = ["resolve_run_id", "MIN_PREFIX"]

MIN_PREFIX = 4  # shorter prefixes match too much to be what anyone meant
_RUN_ID = re.compile(r"[0-9a-f]+")


def resolve_run_id(client: MlflowClient, text: str, *, what: str = "run") -> str:
    """The full id of the one run whose id is, or starts with, ``text``; else a UserError."""
    given = text.strip().lower()
    if not given:
        raise UserError(f"no {what} id given: pass one (the MLflow UI and each step print them)")
    if not _RUN_ID.fullmatch(given) or len(given) > 32:
        raise UserError(
            f"{what} id {text!r} is not a run id: expected the 32 hex characters MLflow shows "
            f"(or their first {MIN_PREFIX} or more)"
        )
    if len(given) < MIN_PREFIX:
        raise UserError(
            f"{what} id {text!r} is too short: give at least {MIN_PREFIX} characters of it"
        )
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    matches = client.search_runs(
        experiments,
        filter_string=f"attributes.run_id LIKE '{given}%'",
        run_view_type=ViewType.ALL,
        max_results=3,
    )
    if not matches:
        raise UserError(
            f"no {what} with id {text!r} in the tracking store {client.tracking_uri}: "
            "copy the id from the MLflow UI or a step's output, or set MLFLOW_TRACKING_URI"
        )
    if len(matches) > 1:
        ids = ", ".join(m.info.run_id for m in matches)
        raise UserError(f"{what} id {text!r} is ambiguous (matches {ids}...): give more of it")
    return matches[0].info.run_id
