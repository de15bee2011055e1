"""Registration of logged models: naming, version tags, aliases ``latest`` and ``champion``.

Naming scheme: one registered model per (space, dataset, format),
``<prefix>-<space>-<dataset>-<format>`` with prefix ``dha`` by default, e.g.
``dha-mobilenet-cifar10-onnx`` and ``dha-mobilenet-cifar10-tensorrt``.

Aliases: ``latest`` always names the new version: MLflow reserves that alias (setting it
raises) and resolves ``models:/<name>@latest`` to the newest version itself. ``champion``
moves only when there is none yet, or the new version is strictly more accurate than the
champion under the same budgets (the ``budget.*`` tags are equal). Registration is atomic
from the user's view: if anything fails after the version is created, the version is
deleted (so ``@latest`` falls back too) and ``champion`` goes back to its previous version.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.entities.model_registry.model_version_status import ModelVersionStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

from export.errors import RegistrationError

__all__ = [
    "FORMATS",
    "LATEST",
    "CHAMPION",
    "BUDGET_TAG_PREFIX",
    "RegisteredVersion",
    "registered_name",
    "budget_tags",
    "register_model_version",
]

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "tensorrt")
LATEST = "latest"
CHAMPION = "champion"
BUDGET_TAG_PREFIX = "budget."
_NAME_PART = re.compile(r"[^a-z0-9]+")
_ABSENT = {ErrorCode.Name(INVALID_PARAMETER_VALUE), ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)}


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version and the aliases it holds after registration."""

    name: str
    version: str
    aliases: tuple[str, ...]
    champion_reason: str

    @property
    def model_uri(self) -> str:
        """``models:/<name>/<version>``."""
        return f"models:/{self.name}/{self.version}"

    def alias_uri(self, alias: str = LATEST) -> str:
        """``models:/<name>@<alias>``."""
        return f"models:/{self.name}@{alias}"


def registered_name(space: str, dataset: str, fmt: str, prefix: str | None = None) -> str:
    """``<prefix>-<space>-<dataset>-<fmt>``, lower case, runs of other characters as ``-``."""
    if fmt not in FORMATS:
        raise RegistrationError(f"model format {fmt!r} is unknown; expected one of {FORMATS}")
    parts = [prefix or "dha", space, dataset, fmt]
    cleaned = [_NAME_PART.sub("-", p.lower()).strip("-") for p in parts]
    if not all(cleaned):
        raise RegistrationError(
            f"registered-model name parts {parts} contain an empty part; expected non-empty "
            "space, dataset and prefix names"
        )
    return "-".join(cleaned)


def budget_tags(budgets: Mapping[str, float | None]) -> dict[str, str]:
    """``{"max_params_m": 5}`` -> ``{"budget.max_params_m": "5.0"}``; None -> ``"none"``."""
    tags = {}
    for key, value in budgets.items():
        if value is not None and not (isinstance(value, int | float) and math.isfinite(value)):
            raise RegistrationError(
                f"budget {key}={value!r} is not a finite number or None; pass numbers "
                "(None for unbounded)"
            )
        tags[BUDGET_TAG_PREFIX + key] = "none" if value is None else str(float(value))
    return tags


def _accuracy(tags: Mapping[str, str], key: str, where: str) -> float:
    try:
        return float(tags[key])
    except (KeyError, ValueError) as exc:
        raise RegistrationError(
            f"{where} has no numeric '{key}' tag (got {tags.get(key)!r}); expected the "
            f"validation accuracy as a number; pass tags={{'{key}': '0.93', ...}}"
        ) from exc


def _current(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        # a missing alias is INVALID_PARAMETER_VALUE, a missing model RESOURCE_DOES_NOT_EXIST
        if exc.error_code in _ABSENT:
            return None
        raise


def _champion_decision(
    champion: ModelVersion | None, accuracy: float, budgets: dict[str, str], key: str
) -> tuple[bool, str]:
    """(move champion?, why) for a new version with ``accuracy`` under ``budgets``."""
    if champion is None:
        return True, "no champion yet"
    theirs = {k: v for k, v in champion.tags.items() if k.startswith(BUDGET_TAG_PREFIX)}
    if theirs != budgets:
        return False, f"champion v{champion.version} was trained under other budgets {theirs}"
    best = _accuracy(champion.tags, key, f"champion v{champion.version}")
    if accuracy > best:
        return True, f"{key} {accuracy:g} > champion v{champion.version}'s {best:g}"
    return False, f"{key} {accuracy:g} <= champion v{champion.version}'s {best:g}"


def _rollback(
    client: MlflowClient,
    name: str,
    version: str,
    champion: ModelVersion | None,
    created_model: bool,
) -> None:
    """Delete the new version and give ``champion`` back to its previous version."""
    logger.warning("registration of %s v%s failed; deleting the version", name, version)
    client.delete_model_version(name, version)
    if champion is not None:
        client.set_registered_model_alias(name, CHAMPION, champion.version)
    if created_model:
        client.delete_registered_model(name)


def register_model_version(
    model_uri: str,
    *,
    name: str,
    tags: Mapping[str, object],
    accuracy_key: str = "top1",
    budgets: Mapping[str, float | None],
    await_registration_for: int = 300,
) -> RegisteredVersion:
    """Register ``model_uri`` (e.g. ``model_info.model_uri``) under ``name``, atomically.

    ``tags`` (values are stringified) must hold ``accuracy_key``; ``budgets`` become
    ``budget.<key>`` tags and decide which versions compete for ``champion``.
    """
    budget = budget_tags(budgets)
    all_tags = {str(k): str(v) for k, v in tags.items()} | budget
    accuracy = _accuracy(all_tags, accuracy_key, f"model {model_uri}")
    client = MlflowClient()
    created_model = not client.search_registered_models(filter_string=f"name = '{name}'")
    champion = _current(client, name, CHAMPION)
    move, reason = _champion_decision(champion, accuracy, budget, accuracy_key)
    version = mlflow.register_model(model_uri, name, await_registration_for=await_registration_for)
    try:
        status = ModelVersionStatus.from_string(version.status)
        if status != ModelVersionStatus.READY:
            raise RuntimeError(f"{name} v{version.version} ended {version.status}")
        for key, value in all_tags.items():
            client.set_model_version_tag(name, version.version, key, value)
        if move:
            client.set_registered_model_alias(name, CHAMPION, version.version)
    except Exception as exc:
        _rollback(client, name, version.version, champion, created_model)
        if isinstance(exc, MlflowException) and exc.error_code == ErrorCode.Name(
            INVALID_PARAMETER_VALUE
        ):
            raise RegistrationError(
                f"registering {model_uri} as {name} failed and was undone: {exc.message}; "
                "fix the tag or alias named there"
            ) from exc
        raise
    aliases = (LATEST, CHAMPION) if move else (LATEST,)
    logger.info("registered %s v%s with aliases %s (%s)", name, version.version, aliases, reason)
    return RegisteredVersion(name, str(version.version), aliases, reason)
