"""The timing primitives: call counts and the shape of what they return (no timed asserts)."""

from __future__ import annotations

from collections import Counter

import pytest

from dha_train.timing import compare_interleaved, time_callable


def test_time_callable_counts_warmup_and_bounds() -> None:
    calls = Counter()
    stats = time_callable(lambda: calls.update("x"), warmup=3, min_iters=7, max_iters=7)
    assert calls["x"] == 10 and stats.iterations == 7
    assert 0 <= stats.median_ms <= stats.p90_ms <= stats.p99_ms


def test_compare_interleaved_alternates_rounds_and_divides_by_the_baseline() -> None:
    order: list[str] = []
    fns = {name: (lambda n=name: order.append(n)) for name in ("base", "other")}
    timed = compare_interleaved(fns, baseline="base", rounds=4, iters=2, warmup=1)
    assert order[:2] == ["base", "other"]  # warm-up, one call each
    # then 4 rounds, each 2 calls of one function followed by 2 of the other
    assert order[2:] == (["base"] * 2 + ["other"] * 2) * 4
    assert timed["base"][1] == 1.0
    assert set(timed) == {"base", "other"} and all(ms >= 0 for ms, _ in timed.values())


def test_drift_is_the_spread_of_chunk_medians() -> None:
    from dha_train.timing import _drift_pct

    assert _drift_pct([10.0] * 100) == 0.0
    assert _drift_pct([10.0] * 50 + [13.0] * 50) == pytest.approx(30.0)  # a slow spell
    assert _drift_pct([10.0, 13.0] * 50) == 0.0  # noise, not drift
    assert _drift_pct([10.0] * 49) == 0.0  # too few samples to tell
