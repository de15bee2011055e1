"""Race-free champion: registrations that overlap, from separate processes released together
by a barrier, 20 rounds, always leave the most accurate eligible version as ``champion``;
against a real SQLite store and a real ``mlflow server`` on 127.0.0.1."""

from __future__ import annotations

import multiprocessing
import os
import random
import traceback

import mlflow
import pytest
from mlflow import MlflowClient

from export.champion import ACCURACY_TAG, current_champion, eligibility
from export.registry import register_model_version

RACERS = 3
ROUNDS = 20
NUM_CLASSES = 10


def _accuracies(round_: int) -> list[float]:
    """Distinct validation top-1 values for the racers of one round, in a random order; one
    racer in three rounds is at chance (not eligible)."""
    rng = random.Random(round_)
    values = rng.sample(range(30, 95), RACERS)
    if round_ % 3 == 0:
        values[rng.randrange(RACERS)] = 10
    return [float(v) for v in values]


def _racer(tracking_uri: str, model_uri: str, index: int, barrier, failures) -> None:
    """One process: in every round, wait for the others, then register at once."""
    try:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        for round_ in range(ROUNDS):
            val_top1 = _accuracies(round_)[index]
            tags = {ACCURACY_TAG: str(val_top1), "racer": str(index)}
            tags |= eligibility(val_top1=val_top1, num_classes=NUM_CLASSES).tags()
            barrier.wait(timeout=120)
            register_model_version(model_uri, name=f"race-{round_}", tags=tags, budgets={})
    except BaseException:
        failures.put(f"racer {index}: {traceback.format_exc()}")
        barrier.abort()
        raise


def _race(tracking_uri: str) -> None:
    with mlflow.start_run():
        logged = mlflow.initialize_logged_model(name="race")
        mlflow.finalize_logged_model(logged.model_id, "READY")
    context = multiprocessing.get_context("spawn")
    barrier, failures = context.Barrier(RACERS), context.Queue()
    racers = [
        context.Process(
            target=_racer, args=(tracking_uri, f"models:/{logged.model_id}", i, barrier, failures)
        )
        for i in range(RACERS)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=600)
    errors = [failures.get() for _ in range(failures.qsize())] if not failures.empty() else []
    assert not errors, errors[0]
    assert [r.exitcode for r in racers] == [0] * RACERS
    client = MlflowClient()
    wrong = []
    for round_ in range(ROUNDS):
        name = f"race-{round_}"
        versions = client.search_model_versions(f"name = '{name}'")
        assert len(versions) == RACERS
        best = max(_accuracies(round_))
        champion = current_champion(client, name)
        if champion is None or float(champion.tags[ACCURACY_TAG]) != best:
            wrong.append((round_, None if champion is None else champion.tags[ACCURACY_TAG], best))
    assert not wrong, f"{len(wrong)} of {ROUNDS} rounds ended on the wrong champion: {wrong}"


@pytest.mark.e2e
def test_overlapping_registrations_on_sqlite(mlflow_store) -> None:
    _race(mlflow_store)


@pytest.mark.e2e
def test_overlapping_registrations_on_a_server(mlflow_server) -> None:
    _race(mlflow_server)
