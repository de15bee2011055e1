"""The ``champion`` alias: who deserves it, and how overlapping registrations agree on it.

Eligibility (decided once, when a version is created, and stored in its tags): a version may
be champion only when its validation top-1 (a percent, measured through the runtime that
serves the format) is at least ``min_top1``, and its own batch-1 latency does not break the
latency budget by more than :data:`LATENCY_TOLERANCE`. ``min_top1 = 0`` (the default) means
:func:`chance_threshold`: twice chance, ``200 / classes`` percent (20% for 10 classes), so a
model that learned nothing (10% on digits after one epoch) is never champion.

Scope: versions compete only with versions registered under the same budgets, resolution,
precision and target device (and, for engines, TensorRT version and compute capability),
the :data:`SCOPE_TAGS`. The champion's scope is that of the oldest eligible version, so the
first champion fixes it; a version of another scope is registered without the alias.

Race freedom, for any store (SQLite, a server, several processes): the champion is a
function of the registry, :func:`choose_champion` over the versions that exist: the most
accurate eligible version of the scope, the older one on a tie. Every registration and every
rollback ends with :func:`settle_champion`, which reads the versions, computes the answer,
sets the alias if it differs, and reads again until what it reads agrees with what it
computed. So the last writer has always checked its write against every version created
before that check, and a version created after the check is settled by its own registrant:
overlapping registrations end with the alias on the right version, with no lock to leave
behind when a process is killed.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

from export.errors import RegistrationError

__all__ = [
    "CHAMPION",
    "ACCURACY_TAG",
    "ELIGIBLE_TAG",
    "ELIGIBLE_REASON_TAG",
    "SCOPE_TAGS",
    "LATENCY_TOLERANCE",
    "Eligibility",
    "chance_threshold",
    "eligibility",
    "accuracy_of",
    "choose_champion",
    "champion_reason",
    "current_champion",
    "settle_champion",
]

logger = logging.getLogger(__name__)

CHAMPION = "champion"
ACCURACY_TAG = "val_top1"
ELIGIBLE_TAG = "champion_eligible"
ELIGIBLE_REASON_TAG = "champion_eligible_reason"
SCOPE_TAGS = (
    "budget.max_params_m",
    "budget.max_flops_m",
    "budget.max_latency_ms",
    "resolution",
    "precision",
    "target_device",
    "tensorrt_version",
    "compute_capability",
)
LATENCY_TOLERANCE = 0.15  # a model may exceed max_latency_ms by 15% (timing noise) and still win
_SETTLE_ROUNDS = 50
_ABSENT = {ErrorCode.Name(INVALID_PARAMETER_VALUE), ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)}


@dataclass(frozen=True)
class Eligibility:
    """Whether a version may hold ``champion``, and why (stored as its two tags)."""

    eligible: bool
    reason: str

    def tags(self) -> dict[str, str]:
        return {ELIGIBLE_TAG: str(self.eligible).lower(), ELIGIBLE_REASON_TAG: self.reason}


def chance_threshold(num_classes: int) -> float:
    """The default minimum validation top-1: twice chance, ``200 / classes`` percent."""
    if num_classes < 2:
        raise RegistrationError(f"num_classes={num_classes}; expected 2 or more classes")
    return 200.0 / num_classes


def eligibility(
    *,
    val_top1: float,
    num_classes: int,
    min_top1: float = 0.0,
    latency_ms: float | None = None,
    max_latency_ms: float | None = None,
) -> Eligibility:
    """May a version with this validation top-1 (percent) and own latency become champion?"""
    if not math.isfinite(val_top1) or not 0.0 <= val_top1 <= 100.0:
        raise RegistrationError(f"val_top1={val_top1!r}; expected a percent in [0, 100]")
    threshold = min_top1 if min_top1 > 0 else chance_threshold(num_classes)
    if val_top1 < threshold:
        rule = "min_top1" if min_top1 > 0 else f"twice chance for {num_classes} classes"
        return Eligibility(
            False, f"validation top-1 {val_top1:.2f}% is below {threshold:.2f}% ({rule})"
        )
    if max_latency_ms is not None and latency_ms is not None:
        limit = max_latency_ms * (1.0 + LATENCY_TOLERANCE)
        if latency_ms > limit:
            return Eligibility(
                False,
                f"batch-1 latency {latency_ms:.3f} ms breaks the budget {max_latency_ms:g} ms "
                f"by more than {LATENCY_TOLERANCE:.0%}",
            )
    return Eligibility(True, f"validation top-1 {val_top1:.2f}% >= {threshold:.2f}%")


def accuracy_of(tags: Mapping[str, str], where: str) -> float:
    """The numeric ``val_top1`` tag (RegistrationError when absent or not a number)."""
    try:
        value = float(tags[ACCURACY_TAG])
    except (KeyError, ValueError) as exc:
        raise RegistrationError(
            f"{where} has no numeric '{ACCURACY_TAG}' tag (got {tags.get(ACCURACY_TAG)!r}); "
            f"expected the validation top-1 in percent, e.g. tags={{'{ACCURACY_TAG}': '93.1'}}"
        ) from exc
    if not math.isfinite(value):
        raise RegistrationError(f"{where} has {ACCURACY_TAG}={value}; expected a finite percent")
    return value


def _scope(version: ModelVersion) -> dict[str, str]:
    return {key: version.tags.get(key, "") for key in SCOPE_TAGS}


def _eligible(versions: Sequence[ModelVersion]) -> list[ModelVersion]:
    return sorted(
        (v for v in versions if v.tags.get(ELIGIBLE_TAG) == "true"), key=lambda v: int(v.version)
    )


def choose_champion(versions: Sequence[ModelVersion]) -> ModelVersion | None:
    """The most accurate eligible version in the oldest eligible version's scope (older wins
    a tie); None when no version is eligible."""
    eligible = _eligible(versions)
    if not eligible:
        return None
    scope = _scope(eligible[0])
    rivals = [v for v in eligible if _scope(v) == scope]
    return max(rivals, key=lambda v: (accuracy_of(v.tags, f"v{v.version}"), -int(v.version)))


def champion_reason(version: ModelVersion, versions: Sequence[ModelVersion]) -> str:
    """Why ``version`` holds ``champion`` among ``versions``, or why it does not."""
    tags = version.tags
    if tags.get(ELIGIBLE_TAG) != "true":
        return f"not eligible: {tags.get(ELIGIBLE_REASON_TAG, 'no eligibility tag')}"
    best = choose_champion(versions)
    mine = accuracy_of(tags, f"v{version.version}")
    if best is None or _number(best) == _number(version):
        others = [v for v in _eligible(versions) if _number(v) != _number(version)]
        return f"{ACCURACY_TAG} {mine:g}: the best of {len(others) + 1} eligible version(s)"
    theirs, ours = _scope(best), _scope(version)
    if theirs != ours:
        differ = {k: (ours[k], theirs[k]) for k in SCOPE_TAGS if ours[k] != theirs[k]}
        return f"champion v{best.version} was registered under another scope (this, its): {differ}"
    best_accuracy = accuracy_of(best.tags, f"v{best.version}")
    return f"{ACCURACY_TAG} {mine:g} <= champion v{best.version}'s {best_accuracy:g}"


def current_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version ``name@champion`` points to, or None (no alias, or no model)."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in _ABSENT:  # no alias: INVALID_PARAMETER_VALUE; no model: the other
            return None
        raise


def _number(version: ModelVersion | None) -> int | None:
    return None if version is None else int(version.version)


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    return list(client.search_model_versions(f"name = '{name}'"))


def settle_champion(client: MlflowClient, name: str) -> tuple[ModelVersion | None, list]:
    """Point ``name@champion`` at :func:`choose_champion` of the registry, checked by reading
    back; returns (champion or None, the versions read last).

    A write that collides with another process's write (SQLite raises a UNIQUE constraint
    error when two processes insert the alias at once) is not an error: the next read
    decides again.
    """
    collision: MlflowException | None = None
    for _ in range(_SETTLE_ROUNDS):
        versions = _versions(client, name)
        best = choose_champion(versions)
        holder = current_champion(client, name)
        if _number(holder) == _number(best):
            return best, versions
        try:
            if best is None:
                client.delete_registered_model_alias(name, CHAMPION)
                logger.info("%s: no eligible version left; champion alias removed", name)
            else:
                client.set_registered_model_alias(name, CHAMPION, best.version)
                logger.info("%s: champion -> v%s", name, best.version)
        except MlflowException as exc:
            collision = exc
            logger.info("%s: champion write collided (%s); reading again", name, exc.error_code)
            time.sleep(random.uniform(0.0, 0.05))
    raise RegistrationError(
        f"the champion of {name} did not settle in {_SETTLE_ROUNDS} rounds (last error: "
        f"{collision.message if collision else 'none'}); another process keeps moving it; "
        "rerun register"
    )
