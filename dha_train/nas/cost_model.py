"""The additive cost model behind the budgets: params, FLOPs and a latency lookup table.

Costs are params (millions), FLOPs (millions of multiply-adds, fvcore, BN excluded, each
candidate traced at its real input shape) and latency (ms, a lookup table timed per
candidate on the target device with :func:`dha_train.timing.time_callable`, cached on disk
per device and shape). A network's cost is the fixed part (stems, head, preprocessing) plus
the chosen candidates' costs; the fixed part is the whole-network count of a reference
child minus its candidates. :meth:`CostModel.latency_check` compares the additive latency
prediction with a real measurement of the whole network.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import platform
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dha_train.errors import BudgetError, ConfigError
from dha_train.nas.budgets import Budget
from dha_train.nas.counting import count_flops, count_params
from dha_train.spaces import baseline_architecture, build_network, build_supernet
from dha_train.spaces.arch import Architecture
from dha_train.spaces.base import Candidate, SpaceConfig, Supernet, Support
from dha_train.timing import time_callable

__all__ = ["Costs", "LatencyCheck", "CostModel"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Costs:
    """Cost of one network; latency is None where the model has no latency table."""

    params_m: float
    flops_m: float
    latency_ms: float | None

    def to_dict(self) -> dict[str, float | None]:
        return dict(vars(self))

    def describe(self) -> str:
        lat = "" if self.latency_ms is None else f", latency {self.latency_ms:.3f} ms"
        return f"params {self.params_m:.4f}M, FLOPs {self.flops_m:.2f}M multiply-adds{lat}"


@dataclass(frozen=True)
class LatencyCheck:
    """Additive latency prediction of a whole network against its measurement."""

    predicted_ms: float
    measured_ms: float

    @property
    def relative_error(self) -> float:
        return abs(self.predicted_ms - self.measured_ms) / self.measured_ms

    def to_dict(self) -> dict[str, float]:
        return {**vars(self), "relative_error": self.relative_error}


def _device_key(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu-{platform.machine()}-{torch.get_num_threads()}threads"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _default_cache_dir() -> Path:
    return Path(os.environ.get("DHA_CACHE_DIR", Path.home() / ".cache" / "dha")) / "latency"


class CostModel:
    """Additive params / FLOPs / latency model of a supernet's child networks."""

    def __init__(
        self,
        supernet: Supernet,
        *,
        latency_device: str | torch.device | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = 1,
        timing_seconds: float = 0.05,
    ) -> None:
        self.supernet = supernet
        self.config: SpaceConfig = supernet.config
        self.device = None if latency_device is None else torch.device(latency_device)
        self.batch_size = batch_size
        self.timing_seconds = timing_seconds
        self._cache_file = None
        self._cache: dict[str, float] = {}
        if self.device is not None:
            directory = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
            directory.mkdir(parents=True, exist_ok=True)
            self._cache_file = directory / f"{_device_key(self.device)}.json"
            if self._cache_file.exists():
                self._cache = json.loads(self._cache_file.read_text())
        memo: dict[Hashable, np.ndarray] = {}
        self.unit_costs: list[np.ndarray] = []
        for unit, n in enumerate(supernet.unit_sizes):
            rows = [self._candidate_cost(unit, c, memo) for c in range(n)]
            self.unit_costs.append(np.stack(rows))
        self._options = [
            list(itertools.combinations(range(n), k))
            for n, k in zip(supernet.unit_sizes, supernet.unit_topk, strict=True)
        ]
        # The baseline (k3/e6 everywhere, or DARTS_V2) as reference: fvcore under-counts some
        # degenerate cells (e.g. every edge of a reduction cell reading one input).
        reference = supernet.support_of(baseline_architecture(self.config))
        whole = self._network_cost(build_network(supernet.architecture(reference)))
        self.fixed = whole - self._units_cost(reference)
        self._save_cache()

    @classmethod
    def from_config(cls, cfg: SpaceConfig, **kwargs: Any) -> CostModel:
        """A cost model for ``cfg`` (builds a throw-away supernet for the shapes)."""
        return cls(build_supernet(cfg), **kwargs)

    @property
    def has_latency(self) -> bool:
        return self.device is not None

    # -- measurement -------------------------------------------------------------------
    def _latency(self, key: str, module: nn.Module, shape: tuple[int, ...]) -> float:
        full = f"{key}|batch={self.batch_size}"
        if full not in self._cache:
            assert self.device is not None
            mod = copy.deepcopy(module).to(self.device).eval()
            x = torch.zeros((self.batch_size, *shape[1:]), device=self.device)
            with torch.no_grad():
                stats = time_callable(
                    lambda: mod(x), device=self.device, warmup=3, min_iters=5,
                    max_seconds=self.timing_seconds,
                )  # fmt: skip
            self._cache[full] = stats.median_ms
        return self._cache[full]

    def _save_cache(self) -> None:
        if self._cache_file is not None:
            self._cache_file.write_text(json.dumps(self._cache, indent=1, sort_keys=True))

    def _candidate_cost(
        self, unit: int, index: int, memo: dict[Hashable, np.ndarray]
    ) -> np.ndarray:
        total = np.zeros(3)
        for inst in self.supernet.candidate_instances(unit, index):
            total = total + self._instance_cost(inst, memo)
        return total

    def _instance_cost(self, inst: Candidate, memo: dict[Hashable, np.ndarray]) -> np.ndarray:
        if inst.key not in memo:
            params = count_params(inst.module)
            # Parameter-free candidates (pools, identity) carry no counted multiply-adds.
            flops = count_flops(inst.module, inst.input_shape).total if params else 0
            lat = 0.0
            if self.device is not None:
                lat = self._latency(
                    f"{self.config.space}:{inst.key}", inst.module, inst.input_shape
                )
            memo[inst.key] = np.array([params / 1e6, flops / 1e6, lat])
        return memo[inst.key]

    def _network_cost(self, net: nn.Module) -> np.ndarray:
        shape = (1, self.config.in_channels, self.config.resolution, self.config.resolution)
        lat = self.measure_latency(net) if self.device is not None else 0.0
        return np.array([count_params(net) / 1e6, count_flops(net, shape).total / 1e6, lat])

    def measure_latency(self, net: nn.Module) -> float:
        """Median latency (ms) of a whole network on the target device at the batch size."""
        if self.device is None:
            raise ConfigError("this cost model has no latency device; pass latency_device")
        r = self.config.resolution
        shape = (self.batch_size, self.config.in_channels, r, r)
        mod = copy.deepcopy(net).to(self.device).eval()
        x = torch.zeros(shape, device=self.device)
        with torch.no_grad():
            stats = time_callable(lambda: mod(x), device=self.device, warmup=3, min_iters=10,
                                  max_seconds=max(0.5, 10 * self.timing_seconds))  # fmt: skip
        return stats.median_ms

    # -- prediction --------------------------------------------------------------------
    def _units_cost(self, support: Sequence[Sequence[int]]) -> np.ndarray:
        total = np.zeros(3)
        for unit, chosen in enumerate(support):
            total += self.unit_costs[unit][list(chosen)].sum(0)
        return total

    def cost_vector(self, support: Sequence[Sequence[int]]) -> np.ndarray:
        """(params_m, flops_m, latency_ms) of a support (latency 0 without a device)."""
        return self.fixed + self._units_cost(support)

    def cost(self, what: Sequence[Sequence[int]] | Architecture) -> Costs:
        """Predicted costs of a support or of an architecture of this configuration."""
        support = what if isinstance(what, tuple | list) else self.supernet.support_of(what)
        p, f, lat = self.cost_vector(support)
        return Costs(float(p), float(f), float(lat) if self.has_latency else None)

    def latency_check(self, arch: Architecture) -> LatencyCheck:
        """Additive prediction against a real measurement of ``build_network(arch)``."""
        predicted = self.cost(arch).latency_ms
        if predicted is None:
            raise ConfigError("this cost model has no latency device; pass latency_device")
        check = LatencyCheck(predicted, self.measure_latency(build_network(arch)))
        log.info("latency prediction %.3f ms, measured %.3f ms (relative error %.1f%%)",
                 check.predicted_ms, check.measured_ms, 100 * check.relative_error)  # fmt: skip
        return check

    def _weights(self, budget: Budget | None) -> np.ndarray:
        limits = budget.limits() if budget is not None else np.full(3, np.inf)
        finite = np.isfinite(limits)
        if not finite.any():
            return np.array([1.0, 1e-3, 0.0])  # no budget: fewest params, then FLOPs
        return np.where(finite, 1.0 / np.where(finite, limits, 1.0), 0.0)

    def unit_options(self, unit: int) -> list[tuple[int, ...]]:
        """Every support a unit may take (k-subsets of its candidates)."""
        return self._options[unit]

    def cheapest_support(self, budget: Budget | None = None) -> Support:
        """Per unit the support of least (budget-normalised) cost."""
        w = self._weights(budget)
        out = []
        for unit in range(len(self.unit_costs)):
            options = self.unit_options(unit)
            costs = np.array([self.unit_costs[unit][list(o)].sum(0) @ w for o in options])
            out.append(options[int(np.argmin(costs))])
        return tuple(out)

    def cheapest_architecture(self, budget: Budget | None = None) -> Architecture:
        return self.supernet.architecture(self.cheapest_support(budget))

    def check_budget(self, budget: Budget) -> Support:
        """Raise BudgetError unless the cheapest architecture meets ``budget``; returns it."""
        if budget.max_latency_ms is not None and not self.has_latency:
            raise ConfigError("a latency budget needs a cost model with a latency_device")
        cheapest = self.cheapest_support(budget)
        if np.any(self.cost_vector(cheapest) > budget.limits()):
            raise BudgetError(
                f"budget ({budget.describe()}) is below the cheapest {self.config.space} "
                f"architecture ({self.cost(cheapest).describe()}); raise the budget or "
                "shrink the space (width_mult, init_channels, layers)"
            )
        return cheapest
