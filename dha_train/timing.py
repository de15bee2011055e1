"""One timing primitive for every latency figure in the project.

Warm-up first, then a loop bounded by count and time; CUDA work is timed with events and
synchronisation. The budgets' latency lookup table and the measurement harness both call
:func:`time_callable`, so their numbers are comparable. The benchmarks compare two or more
calls with :func:`compare_interleaved`, which alternates them in short rounds so that a
shared machine's slow spells hit every call alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import torch

__all__ = ["TimingStats", "synchronize", "time_callable", "compare_interleaved"]


@dataclass(frozen=True)
class TimingStats:
    """Summary of repeated timings of one call, in milliseconds."""

    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    iterations: int
    # How much the machine's speed moved while timing: the medians of 10 consecutive chunks
    # of the samples, max / min - 1, in percent (0 with fewer than 50 samples). A shared
    # host's slow spells show here, whatever the median does.
    drift_pct: float = 0.0
    # The 10th percentile: what the call costs when the machine lets it run, far steadier
    # than the median on a shared host (the budgets' latency table uses it).
    p10_ms: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _percentile(sorted_ms: list[float], q: float) -> float:
    index = min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))
    return sorted_ms[index]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _drift_pct(samples: list[float], chunks: int = 10) -> float:
    if len(samples) < 5 * chunks:
        return 0.0
    size = len(samples) // chunks
    medians = [statistics.median(samples[i * size : (i + 1) * size]) for i in range(chunks)]
    return (max(medians) / min(medians) - 1.0) * 100.0


def time_callable(
    fn: Callable[[], object],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 5,
    min_iters: int = 10,
    max_iters: int = 1000,
    max_seconds: float = 2.0,
) -> TimingStats:
    """Time ``fn()``: ``warmup`` untimed calls, then at least ``min_iters`` timed calls and
    more until ``max_iters`` or ``max_seconds`` is reached."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(samples) < max_iters and (len(samples) < min_iters or time.perf_counter() < deadline):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    ordered = sorted(samples)
    return TimingStats(
        median_ms=statistics.median(ordered),
        p90_ms=_percentile(ordered, 0.90),
        p99_ms=_percentile(ordered, 0.99),
        mean_ms=statistics.fmean(ordered),
        std_ms=statistics.pstdev(ordered),
        iterations=len(ordered),
        drift_pct=_drift_pct(samples),
        p10_ms=_percentile(ordered, 0.10),
    )


def compare_interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    baseline: str,
    device: torch.device | str = "cpu",
    rounds: int = 7,
    iters: int = 3,
    warmup: int = 2,
) -> dict[str, tuple[float, float]]:
    """Per call: (median ms per call, median over rounds of its time / the baseline's).

    Each round times ``iters`` calls of every function in turn; the ratio is taken within a
    round, so a slow spell that spans a round scales both sides of it.
    """
    device = torch.device(device)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    per_round: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            synchronize(device)
            per_round[name].append((time.perf_counter() - start) * 1e3 / iters)
    base = per_round[baseline]
    return {
        name: (
            statistics.median(ms),
            statistics.median(t / b for t, b in zip(ms, base, strict=True)),
        )
        for name, ms in per_round.items()
    }
