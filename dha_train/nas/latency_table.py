"""The latency lookup table behind ``max_latency_ms``: entries timed once, cached on disk.

An entry is one candidate module timed alone through a latency runtime
(:mod:`dha_train.nas.latency_runtimes`) at its real input shape; a calibration entry is a
whole network. The cache file is one per device, runtime, runtime version and CPU threads
(``<device>-<runtime>-<version>-<N>threads.json`` under ``$DHA_CACHE_DIR/latency``, default
``~/.cache/dha/latency``), and every entry's key holds the input shape (batch included), so
a table timed with one runtime, version, thread count or shape is never read as another's.

A network is not the sum of its candidates timed alone: ONNX Runtime and TensorRT pay a
cost per call (binding, thread-pool wake-up, launch, copies) that a whole network pays once.
:func:`fit_calibration` fits that per-instance cost ``o`` and the fixed part ``a`` (stem,
head, one call) to a few whole networks timed through the same runtime:
``T(arch) ~= a + sum over chosen instances of (t_alone - o)``; eager torch pays its Python
call per module inside a network too, so it fits ``a`` alone.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dha_train.nas.latency_runtimes import (
    LatencyRuntime,
    deployment_runtime,
    latency_runtime,
    time_calls,
)

__all__ = [
    "LatencyTable",
    "Items",
    "fit_calibration",
    "default_cache_dir",
    "table_file_name",
]

log = logging.getLogger(__name__)

Items = Mapping[str, tuple[nn.Module, Sequence[int]]]  # key -> (module, input shape)


def default_cache_dir() -> Path:
    """``$DHA_CACHE_DIR/latency`` (default ``~/.cache/dha/latency``)."""
    return Path(os.environ.get("DHA_CACHE_DIR", Path.home() / ".cache" / "dha")) / "latency"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu-{platform.machine()}"


def table_file_name(device: torch.device, runtime: LatencyRuntime) -> str:
    """The cache file's name: device, runtime, runtime version, CPU threads."""
    raw = f"{_device_name(device)}-{runtime.tag(device)}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw) + ".json"


def fit_calibration(
    alone_sums: Sequence[float],
    instance_counts: Sequence[int],
    measured: Sequence[float],
    *,
    per_call_overhead: bool,
) -> tuple[float, float]:
    """(a, o) with ``measured ~= a + alone_sums - o * instance_counts``, robustly (Theil-Sen:
    ``o`` the median of the pairwise slopes, ``a`` the median intercept), so that one
    network timed during a slow spell does not move the table; ``o = 0`` for runtimes
    without a per-call cost, or where the networks do not tell it (equal counts, o < 0).

    ``a`` is the stem, the head and one call, never negative: where the fit gives a < 0 (the
    entries were timed in a slower spell than the networks), ``a = 0`` and ``o`` is refitted
    as the median of ``(alone_sums - measured) / counts``, so the calibration networks are
    still predicted at their median and no network is predicted below zero."""
    s, n, t = (np.asarray(v, dtype=float) for v in (alone_sums, instance_counts, measured))
    residual = t - s
    slopes = [
        (residual[j] - residual[i]) / (n[i] - n[j])
        for i in range(len(n))
        for j in range(i + 1, len(n))
        if n[i] != n[j]
    ]
    o = max(0.0, float(np.median(slopes))) if per_call_overhead and slopes else 0.0
    a = float(np.median(residual + o * n))
    if a >= 0.0:
        return a, o
    if per_call_overhead and (n > 0).all():
        o = max(0.0, float(np.median(-residual / n)))
    return 0.0, o


class LatencyTable:
    """Cached latency entries of one device and runtime (None = the deployment runtime)."""

    def __init__(
        self,
        device: str | torch.device,
        runtime: str | None = None,
        *,
        cache_dir: str | Path | None = None,
        batch_size: int = 1,
        timing_seconds: float = 0.1,
    ) -> None:
        self.device = torch.device(device)
        self.runtime = latency_runtime(runtime if runtime else deployment_runtime(self.device))
        self.runtime.check(self.device)
        self.batch_size = batch_size
        self.timing_seconds = timing_seconds
        directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        directory.mkdir(parents=True, exist_ok=True)
        self.file = directory / table_file_name(self.device, self.runtime)
        self._entries: dict[str, float] = {}
        if self.file.exists():
            self._entries = json.loads(self.file.read_text())
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        log.info("latency table: %s on %s (%s)", self.runtime.name, self.device, self.file)

    def batch_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """``shape`` with the table's batch size."""
        return (self.batch_size, *shape[1:])

    @property
    def whole_seconds(self) -> float:
        """Timing per whole network (entries get ``timing_seconds``)."""
        return max(0.5, 20 * self.timing_seconds)

    def _workdir(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="dha-latency-")
        return Path(self._tmp.name)

    def _time(self, items: Items, seconds: float) -> dict[str, float]:
        """Time ``items`` now (prepared first, then timed in interleaved rounds)."""
        calls = {
            key: self.runtime.prepare(module, self.batch_shape(shape), self.device, self._workdir())
            for key, (module, shape) in items.items()
        }
        return time_calls(self.runtime, calls, self.device, seconds=seconds)

    def lookup(self, items: Items, *, whole: bool = False) -> dict[str, float]:
        """ms of each module alone (or, ``whole``, of each whole network) on its input shape
        with the table's batch size; timed now only where the cache has no entry."""
        prefix = "whole:" if whole else ""
        full = {
            f"{prefix}{key}|shape={'x'.join(map(str, self.batch_shape(shape)))}": key
            for key, (_, shape) in items.items()
        }
        missing = {f: items[k] for f, k in full.items() if f not in self._entries}
        if missing:
            seconds = self.whole_seconds if whole else self.timing_seconds
            self._entries.update(self._time(missing, seconds))
        return {key: self._entries[f] for f, key in full.items()}

    def measure(self, net: nn.Module, shape: Sequence[int]) -> float:
        """ms of a whole network now (never cached), as a calibration entry is timed."""
        return self._time({"net": (net, shape)}, self.whole_seconds)["net"]

    def save(self) -> None:
        """Write the entries (atomically: other steps and ranks may read the file meanwhile)
        and remove the temporary exports."""
        partial = self.file.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(self._entries, indent=1, sort_keys=True))
        partial.replace(self.file)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
