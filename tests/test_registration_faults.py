"""Atomic, idempotent registration of an export run's formats, with failures injected at each
point of :func:`export.registry.register_export` against a real SQLite store (and once
against a real ``mlflow server`` on 127.0.0.1).

A failure is injected by making one real client call raise on its n-th use; everything else
runs against the real store. The registry afterwards must be exactly what it was before.
"""

from __future__ import annotations

from collections.abc import Iterator

import mlflow
import pytest
from mlflow import MlflowClient

from export.champion import CHAMPION, current_champion, eligibility
from export.errors import RegistrationError
from export.registry import KEY_TAG, VersionRequest, register_export
from tests.test_export_support import CLASS_NAMES, logged_digits_store

BUDGETS = {"max_params_m": 1.0, "max_flops_m": None, "max_latency_ms": None}


@pytest.fixture(scope="module")
def logged_uri(tmp_path_factory) -> Iterator[str]:
    yield from logged_digits_store(tmp_path_factory)


def _requests(prefix: str, uri: str, val_top1: float) -> list[VersionRequest]:
    tags = {"val_top1": str(val_top1), "dataset": "digits"}
    tags |= eligibility(val_top1=val_top1, num_classes=len(CLASS_NAMES)).tags()
    return [VersionRequest(fmt, f"{prefix}-{fmt}", uri, tags) for fmt in ("onnx", "tensorrt")]


def _snapshot(client: MlflowClient, names: list[str]) -> dict[str, object]:
    """Every registered model of ``names``: its versions with their tags, and the champion."""
    state: dict[str, object] = {}
    for name in names:
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            state[name] = None
            continue
        versions = client.search_model_versions(f"name = '{name}'")
        champion = current_champion(client, name)
        state[name] = (
            sorted((int(v.version), tuple(sorted(v.tags.items()))) for v in versions),
            None if champion is None else int(champion.version),
        )
    return state


class Injected(Exception):
    """The failure a test injects."""


def _fail_on_call(monkeypatch, method: str, call: int, error: BaseException) -> list[int]:
    """Make ``MlflowClient.<method>`` raise ``error`` on its ``call``-th use (1-based)."""
    real = getattr(MlflowClient, method)
    calls = [0]

    def wrapper(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, method, wrapper)
    return calls


# (client method, which call fails, what it raises): every step of a two-format registration
FAULTS = [
    ("create_registered_model", 1, Injected("first model")),
    ("create_registered_model", 2, Injected("second model")),
    ("_create_model_version", 1, Injected("first version")),
    ("_create_model_version", 2, Injected("second version")),
    ("_create_model_version", 2, KeyboardInterrupt()),
    ("set_registered_model_alias", 1, Injected("first alias")),
    ("set_registered_model_alias", 2, Injected("second alias")),
    ("get_model_version_by_alias", 3, Injected("reading the champion back")),
]


@pytest.mark.parametrize("earlier", [False, True], ids=["empty-registry", "with-champion"])
@pytest.mark.parametrize(("method", "call", "error"), FAULTS, ids=lambda x: str(x))
def test_injected_failure_leaves_the_registry_as_it_was(
    logged_uri, monkeypatch, method, call, error, earlier
) -> None:
    client = MlflowClient()
    prefix = f"fault-{method.strip('_')}-{call}-{type(error).__name__}-{earlier}".lower()
    requests = _requests(prefix, logged_uri, 80.0)
    names = [r.name for r in requests]
    if earlier:  # a champion at 60% that the failed registration (80%) would have replaced
        register_export(_requests(prefix, logged_uri, 60.0), key="earlier", budgets=BUDGETS)
    before = _snapshot(client, names)
    calls = _fail_on_call(monkeypatch, method, call, error)
    with pytest.raises(type(error)):
        register_export(requests, key="export-run", budgets=BUDGETS)
    assert calls[0] >= call  # the failure really happened at that point
    monkeypatch.undo()
    assert _snapshot(client, names) == before
    # the rerun registers both formats once; a second rerun creates nothing new
    first = register_export(requests, key="export-run", budgets=BUDGETS)
    assert [r.created for r in first] == [True, True]
    assert all(CHAMPION in r.aliases for r in first)
    after = _snapshot(client, names)
    again = register_export(requests, key="export-run", budgets=BUDGETS)
    assert [r.created for r in again] == [False, False]
    assert [r.version for r in again] == [r.version for r in first]
    assert _snapshot(client, names) == after


def test_an_interrupted_run_is_completed_by_the_rerun_without_duplicates(logged_uri) -> None:
    """A process killed between the two formats (no rollback ran): the rerun reuses the
    version that exists and adds only the missing one."""
    client = MlflowClient()
    onnx, tensorrt = _requests("killed", logged_uri, 70.0)
    register_export([onnx], key="run-1", budgets=BUDGETS)  # what the killed process left
    results = register_export([onnx, tensorrt], key="run-1", budgets=BUDGETS)
    assert [r.created for r in results] == [False, True]
    for name in (onnx.name, tensorrt.name):
        versions = client.search_model_versions(f"name = '{name}' and tags.`{KEY_TAG}` = 'run-1'")
        assert len(versions) == 1


@pytest.mark.e2e
def test_injected_failure_against_a_real_server(mlflow_server, tmp_path, monkeypatch) -> None:
    from tests.test_export_support import _log_digits_model

    uri = _log_digits_model(tmp_path)
    client = MlflowClient()
    assert mlflow.get_tracking_uri().startswith("http://127.0.0.1")
    register_export(_requests("server", uri, 60.0), key="earlier", budgets=BUDGETS)
    requests = _requests("server", uri, 80.0)
    names = [r.name for r in requests]
    before = _snapshot(client, names)
    _fail_on_call(monkeypatch, "set_registered_model_alias", 1, Injected("alias"))
    with pytest.raises(Injected):
        register_export(requests, key="export-run", budgets=BUDGETS)
    monkeypatch.undo()
    assert _snapshot(client, names) == before
    # a server-side refusal (an invalid tag key) is undone the same way
    bad = [VersionRequest(r.fmt, r.name, r.model_uri, {**r.tags, "bad@key": "x"}) for r in requests]
    with pytest.raises(RegistrationError, match="undone"):
        register_export(bad, key="export-run", budgets=BUDGETS)
    assert _snapshot(client, names) == before
    results = register_export(requests, key="export-run", budgets=BUDGETS)
    assert all(CHAMPION in r.aliases and r.created for r in results)
    for name in names:  # the earlier version and this one: nothing left from the failures
        assert len(client.search_model_versions(f"name = '{name}'")) == 2


@pytest.mark.parametrize(
    ("requests", "match"),
    [([VersionRequest("pt", "refused-pt", "models:/m-x", {"val_top1": "90"})], "format 'pt'"),
     ([VersionRequest("onnx", "refused-twice", "models:/m-x", {"val_top1": "90"})] * 2, "repeat"),
     ([VersionRequest("onnx", "refused-top1", "models:/m-x", {"val_top1": "inf"})], "finite")],
)  # fmt: skip
def test_bad_requests_are_refused_before_anything_is_created(logged_uri, requests, match) -> None:
    with pytest.raises(RegistrationError, match=match):
        register_export(requests, key="k", budgets=BUDGETS)
    names = {r.name for r in requests}
    assert [m for m in MlflowClient().search_registered_models() if m.name in names] == []
