"""Model URIs as users type them, checked before anything is downloaded.

``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/<run id>/<path>`` (a short
run id works) or a local MLflow model folder. A name, alias, version or run that does not
exist is one line naming what does; no tracking store is created as a side effect.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dha_train.errors import UserError
from pipeline.run_ids import resolve_run_id
from pipeline.runs import default_tracking_uri

__all__ = ["check_model_uri"]


def _store_client() -> MlflowClient:
    """A client on the store the pipeline wrote to; an error rather than a new empty store."""
    if not os.environ.get("MLFLOW_TRACKING_URI") and not Path("mlflow.db").is_file():
        raise UserError(
            f"no MLflow store here ({Path.cwd()} has no mlflow.db): run from the folder that "
            "holds it, or set MLFLOW_TRACKING_URI (e.g. sqlite:////abs/path/mlflow.db)"
        )
    mlflow.set_tracking_uri(default_tracking_uri())
    return MlflowClient()


def _registered(client: MlflowClient, name: str) -> RegisteredModel:
    try:
        return client.get_registered_model(name)
    except MlflowException:
        names = [m.name for m in client.search_registered_models(max_results=200)]
        close = [n for n in names if n.startswith(name)] or difflib.get_close_matches(name, names)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listed = ", ".join(names[:10]) or "none yet; run `dha run` first"
        raise UserError(f"no registered model {name!r}{hint}; registered: {listed}") from None


def _check_models_uri(client: MlflowClient, uri: str) -> None:
    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        aliases = dict(_registered(client, name).aliases)
        if alias not in aliases and alias != "latest":
            listed = ", ".join(f"@{a}" for a in sorted(aliases)) or "none"
            raise UserError(
                f"registered model {name!r} has no alias {alias!r}; its aliases: {listed} "
                "(or use @latest, or /<version>)"
            )
        return
    name, _, version = ref.partition("/")
    _registered(client, name)
    versions = sorted(
        int(v.version) for v in client.search_model_versions(f"name = '{name}'", max_results=1000)
    )
    if version in ("", "latest"):
        return
    if not version.isdigit() or int(version) not in versions:
        raise UserError(
            f"registered model {name!r} has no version {version!r}; its versions: "
            f"{', '.join(map(str, versions)) or 'none'}"
        )


def check_model_uri(uri: str) -> str:
    """``uri`` ready to load (a short run id expanded), or a UserError saying what is wrong."""
    if uri.startswith("models:/"):
        _check_models_uri(_store_client(), uri)
        return uri
    if uri.startswith("runs:/"):
        client = _store_client()
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        return f"runs:/{resolve_run_id(client, run_id)}/{path}"
    if "://" not in uri and not (Path(uri) / "MLmodel").is_file():
        raise UserError(
            f"no MLflow model at {uri!r}: pass models:/<name>@<alias>, models:/<name>/<version>, "
            "runs:/<run id>/<path> or a folder holding an MLmodel file"
        )
    return uri
