"""Registration of logged models: naming, version tags, atomic and idempotent registration.

Naming scheme: one registered model per (space, dataset, format),
``<prefix>-<space>-<dataset>-<format>`` with prefix ``dha`` by default, e.g.
``dha-mobilenet-cifar10-onnx`` and ``dha-mobilenet-cifar10-tensorrt``.

:func:`register_export` registers every format of one export run as one unit:

- tags are set when each version is created (``mlflow.register_model(..., tags=...)``), so a
  version never exists with part of its tags;
- each version carries ``registration_key`` (the export run id in the pipeline): a rerun
  with the same key finds the versions it made and creates nothing new;
- any failure, an interrupt included, deletes every version this call created, in every
  format, deletes a registered model this call created if it is left empty, and settles
  ``champion`` again (:mod:`export.champion`), so the registry is as it was before.

Aliases: ``latest`` always names the newest version (MLflow reserves that alias and
resolves ``models:/<name>@latest`` itself); ``champion`` follows :mod:`export.champion`.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.entities.model_registry.model_version_status import ModelVersionStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    ALREADY_EXISTS,
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    ErrorCode,
)

from export.champion import CHAMPION, accuracy_of, champion_reason, settle_champion
from export.errors import RegistrationError
from export.formats import FORMATS

__all__ = [
    "FORMATS",
    "LATEST",
    "CHAMPION",
    "BUDGET_TAG_PREFIX",
    "KEY_TAG",
    "VersionRequest",
    "RegisteredVersion",
    "registered_name",
    "budget_tags",
    "register_export",
    "register_model_version",
]

logger = logging.getLogger(__name__)

LATEST = "latest"
BUDGET_TAG_PREFIX = "budget."
KEY_TAG = "registration_key"
_NAME_PART = re.compile(r"[^a-z0-9]+")
_EXISTS = {ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)}


@dataclass(frozen=True)
class VersionRequest:
    """One model to register: its format, registered name, logged-model URI and tags."""

    fmt: str
    name: str
    model_uri: str
    tags: Mapping[str, object]
    description: str = ""  # set on the version right after it is created (rolled back alike)


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version and the aliases it holds after registration."""

    name: str
    version: str
    aliases: tuple[str, ...]
    champion_reason: str
    created: bool = True  # False: an earlier call with the same key had registered it

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


def _existing(client: MlflowClient, name: str, key: str, fmt: str) -> ModelVersion | None:
    """The version an earlier call with this key registered under ``name``, if any."""
    found = client.search_model_versions(f"name = '{name}' and tags.`{KEY_TAG}` = '{key}'")
    same = [v for v in found if v.tags.get("format") == fmt]
    return min(same, key=lambda v: int(v.version)) if same else None


def _create_model(client: MlflowClient, name: str) -> bool:
    """Create the registered model ``name``; False if it exists already."""
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code in _EXISTS:
            return False
        raise
    return True


def _create_version(request: VersionRequest, tags: dict[str, str], await_for: int) -> ModelVersion:
    version = mlflow.register_model(
        request.model_uri, request.name, await_registration_for=await_for, tags=tags
    )
    status = ModelVersionStatus.from_string(version.status)
    if status != ModelVersionStatus.READY:
        raise RegistrationError(
            f"{request.name} v{version.version} ended {version.status}, not READY; check the "
            f"model at {request.model_uri} and rerun register"
        )
    return version


def _rollback(
    client: MlflowClient,
    versions: Sequence[ModelVersion],
    models: Sequence[str],
    names: Sequence[str],
) -> None:
    """Delete what this call created, newest first, then settle every touched champion."""
    for version in reversed(versions):
        logger.warning("registration failed; deleting %s v%s", version.name, version.version)
        client.delete_model_version(version.name, version.version)
    for name in models:
        if not client.search_model_versions(f"name = '{name}'"):
            logger.warning("registration failed; deleting the empty registered model %s", name)
            client.delete_registered_model(name)
    for name in names:
        settle_champion(client, name)


def _prepared(
    requests: Sequence[VersionRequest], key: str, budgets: Mapping[str, float | None]
) -> list[dict[str, str]]:
    """Every request's full tags, checked before anything is created."""
    budget = budget_tags(budgets)
    names = [r.name for r in requests]
    if len(set(names)) != len(names):
        raise RegistrationError(f"registered names {names} repeat; expected one per format")
    prepared = []
    for request in requests:
        if request.fmt not in FORMATS:
            raise RegistrationError(f"format {request.fmt!r} is unknown; expected one of {FORMATS}")
        tags = {str(k): str(v) for k, v in request.tags.items()} | budget
        tags |= {KEY_TAG: key, "format": request.fmt}
        accuracy_of(tags, f"model {request.model_uri}")
        prepared.append(tags)
    return prepared


def register_export(
    requests: Sequence[VersionRequest],
    *,
    key: str,
    budgets: Mapping[str, float | None],
    await_registration_for: int = 300,
) -> list[RegisteredVersion]:
    """Register every request as one unit (see the module docstring); ``key`` makes it
    idempotent, ``budgets`` become ``budget.<key>`` tags (part of the champion's scope)."""
    all_tags = _prepared(requests, key, budgets)
    client = MlflowClient()
    names = [r.name for r in requests]
    created: list[ModelVersion] = []
    created_models: list[str] = []
    versions: list[tuple[ModelVersion, bool]] = []
    try:
        for request, tags in zip(requests, all_tags, strict=True):
            version = _existing(client, request.name, key, request.fmt)
            if version is not None:
                logger.info("%s v%s exists for key %s", request.name, version.version, key)
                versions.append((version, False))
                continue
            if _create_model(client, request.name):
                created_models.append(request.name)
            version = _create_version(request, tags, await_registration_for)
            created.append(version)
            if request.description:
                client.update_model_version(
                    request.name, version.version, description=request.description
                )
            versions.append((version, True))
        settled = {name: settle_champion(client, name) for name in names}
    except BaseException as exc:
        _rollback(client, created, created_models, names)
        if isinstance(exc, MlflowException) and exc.error_code == ErrorCode.Name(
            INVALID_PARAMETER_VALUE
        ):
            raise RegistrationError(
                f"registering {names} failed and was undone: {exc.message}; fix the tag or "
                "alias named there"
            ) from exc
        raise
    results = []
    for version, was_created in versions:
        champion, seen = settled[version.name]
        mine = next((v for v in seen if int(v.version) == int(version.version)), version)
        newest = max((int(v.version) for v in seen), default=int(version.version))
        holds = champion is not None and int(champion.version) == int(version.version)
        aliases = ((LATEST,) if newest == int(version.version) else ()) + (
            (CHAMPION,) if holds else ()
        )
        reason = champion_reason(mine, seen)
        logger.info("registered %s v%s with aliases %s (%s)", version.name, version.version,
                    aliases, reason)  # fmt: skip
        results.append(
            RegisteredVersion(version.name, str(version.version), aliases, reason, was_created)
        )
    return results


def register_model_version(
    model_uri: str,
    *,
    name: str,
    tags: Mapping[str, object],
    budgets: Mapping[str, float | None],
    key: str | None = None,
    await_registration_for: int = 300,
) -> RegisteredVersion:
    """Register one ONNX or TensorRT model (``tags["format"]``, default onnx) on its own;
    without ``key`` every call makes a new version."""
    fmt = str(tags.get("format", "onnx"))
    request = VersionRequest(fmt, name, model_uri, tags)
    (registered,) = register_export(
        [request],
        key=key or uuid.uuid4().hex,
        budgets=budgets,
        await_registration_for=await_registration_for,
    )
    return registered
