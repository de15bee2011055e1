"""One timing primitive for every latency figure in the project.

Warm-up first, then a loop bounded by count and time; CUDA work is timed with events and
synchronisation. The budgets' latency lookup table and the measurement harness both call
:func:`time_callable`, so their numbers are comparable.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

__all__ = ["TimingStats", "time_callable"]


@dataclass(frozen=True)
class TimingStats:
    """Summary of repeated timings of one call, in milliseconds."""

    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    iterations: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _percentile(sorted_ms: list[float], q: float) -> float:
    index = min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))
    return sorted_ms[index]


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
    if cuda:
        torch.cuda.synchronize(device)
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
    )
