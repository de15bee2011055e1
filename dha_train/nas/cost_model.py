"""The additive cost model behind the budgets: params, FLOPs and a latency lookup table.

Costs are params (millions), FLOPs (millions of multiply-adds, fvcore, BN excluded, each
candidate traced at its real input shape) and latency (ms at the batch size, default 1:
:class:`dha_train.nas.latency_table.LatencyTable`, each candidate timed on the target
device through a latency runtime, by default the device's deployment runtime, ONNX Runtime
on the CPU, and cached on disk per device, runtime, version, threads and shape). A network's
cost is the fixed part (stems, head, preprocessing) plus the chosen candidates' costs. For
params and FLOPs the fixed part is the whole-network count of a reference child minus its
candidates; for latency it is fitted with the per-call cost of the runtime to a few whole
networks timed through that runtime (:func:`latency_table.fit_calibration`).
:meth:`CostModel.latency_check` compares the additive prediction with a measurement of the
whole network through the same runtime.
"""

from __future__ import annotations

import itertools
import logging
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
from dha_train.nas.latency_table import LatencyTable, fit_calibration
from dha_train.spaces import baseline_architecture, build_network, build_supernet
from dha_train.spaces.arch import Architecture
from dha_train.spaces.base import Candidate, SpaceConfig, Supernet, Support

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
    """Additive latency prediction of a whole network against its measurement through the
    same runtime."""

    predicted_ms: float
    measured_ms: float
    runtime: str = "torch"

    @property
    def relative_error(self) -> float:
        return abs(self.predicted_ms - self.measured_ms) / self.measured_ms

    def to_dict(self) -> dict[str, float | str]:
        return {**vars(self), "relative_error": self.relative_error}

    def metrics(self) -> dict[str, float]:
        """``latency.predicted_ms``, ``latency.measured_ms`` and ``latency.relative_error``."""
        return {
            "latency.predicted_ms": self.predicted_ms,
            "latency.measured_ms": self.measured_ms,
            "latency.relative_error": self.relative_error,
        }


class CostModel:
    """Additive params / FLOPs / latency model of a supernet's child networks."""

    def __init__(
        self,
        supernet: Supernet,
        *,
        latency_device: str | torch.device | None = None,
        latency_runtime: str | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = 1,
        timing_seconds: float = 0.1,
    ) -> None:
        """Without ``latency_device`` there is no latency; ``latency_runtime`` is a name in
        ``latency_runtimes.LATENCY_RUNTIMES`` (None = the device's deployment runtime)."""
        self.supernet = supernet
        self.config: SpaceConfig = supernet.config
        self.table: LatencyTable | None = None
        self.call_overhead_ms = 0.0  # per instance, fitted with the table
        if latency_device is not None:
            self.table = LatencyTable(
                latency_device, latency_runtime, cache_dir=cache_dir, batch_size=batch_size,
                timing_seconds=timing_seconds,
            )  # fmt: skip
        memo: dict[Hashable, np.ndarray] = {}
        self.unit_costs: list[np.ndarray] = []
        for unit, n in enumerate(supernet.unit_sizes):
            rows = [self._candidate_cost(unit, c, memo) for c in range(n)]
            self.unit_costs.append(np.stack(rows))
        self._instances: list[np.ndarray] = []  # modules per candidate (0 for a zero branch)
        if self.table is not None:
            self._time_candidates()
        self._options = [
            list(itertools.combinations(range(n), k))
            for n, k in zip(supernet.unit_sizes, supernet.unit_topk, strict=True)
        ]
        # The baseline (k3/e6 everywhere, or DARTS_V2) as reference: fvcore under-counts some
        # degenerate cells (e.g. every edge of a reduction cell reading one input).
        reference = supernet.support_of(baseline_architecture(self.config))
        whole = self._network_cost(build_network(supernet.architecture(reference)))
        self.fixed = whole - self._units_cost(reference)
        if self.table is not None:
            self._calibrate_latency(reference)
            self.table.save()

    @classmethod
    def from_config(cls, cfg: SpaceConfig, **kwargs: Any) -> CostModel:
        """A cost model for ``cfg`` (builds a throw-away supernet for the shapes)."""
        return cls(build_supernet(cfg), **kwargs)

    @property
    def has_latency(self) -> bool:
        return self.table is not None

    @property
    def device(self) -> torch.device | None:
        return None if self.table is None else self.table.device

    @property
    def runtime_name(self) -> str | None:
        """The latency runtime's name (None without a latency device)."""
        return None if self.table is None else self.table.runtime.name

    # -- measurement -------------------------------------------------------------------
    def _input_shape(self) -> tuple[int, int, int, int]:
        r = self.config.resolution
        return (1, self.config.in_channels, r, r)

    def _calibration_supports(self, reference: Support) -> list[Support]:
        """The reference, the fastest and the slowest child by the table, two random ones."""
        rng = np.random.default_rng(0)
        per_unit = [[self.unit_costs[u][list(o)].sum(0)[2] for o in self.unit_options(u)]
                    for u in range(len(self.unit_costs))]  # fmt: skip
        pick = [lambda c: int(np.argmin(c)), lambda c: int(np.argmax(c))]
        pick += [lambda c: int(rng.integers(len(c)))] * 2
        supports = [tuple(reference)]
        for choose in pick:
            support = tuple(self.unit_options(u)[choose(c)] for u, c in enumerate(per_unit))
            if support not in supports:
                supports.append(support)
        return supports

    def _time_candidates(self) -> None:
        """Each candidate's latency column: its instances timed alone through the table."""
        assert self.table is not None
        items: dict[str, tuple[nn.Module, tuple[int, ...]]] = {}
        names: list[list[list[str]]] = []  # per unit, per candidate: its instances' keys
        for unit, n in enumerate(self.supernet.unit_sizes):
            names.append([])
            for index in range(n):
                keys = []
                for inst in self.supernet.candidate_instances(unit, index):
                    keys.append(f"{self.config.space}:{inst.key}")
                    items.setdefault(keys[-1], (inst.module, inst.input_shape))
                names[unit].append(keys)
        times = self.table.lookup(items)
        for unit, row in enumerate(names):
            self.unit_costs[unit][:, 2] = [sum(times[k] for k in keys) for keys in row]
            self._instances.append(np.array([len(keys) for keys in row]))

    def _calibrate_latency(self, reference: Support) -> None:
        """Fit the fixed latency and the runtime's per-instance call cost to whole networks."""
        assert self.table is not None
        supports = self._calibration_supports(reference)
        items = {
            f"{self.config!r}:{s}": (
                build_network(self.supernet.architecture(s)),
                self._input_shape(),
            )
            for s in supports
        }
        measured = list(self.table.lookup(items, whole=True).values())
        sums = [self._units_cost(s)[2] for s in supports]
        counts = [sum(int(self._instances[u][list(c)].sum()) for u, c in enumerate(s))
                  for s in supports]  # fmt: skip
        a, overhead = fit_calibration(
            sums, counts, measured, per_call_overhead=self.table.runtime.per_call_overhead
        )
        for unit, costs in enumerate(self.unit_costs):
            costs[:, 2] = np.maximum(0.0, costs[:, 2] - overhead * self._instances[unit])
        self.fixed[2] = a
        self.call_overhead_ms = overhead
        log.info("latency table through %s: fixed %.4f ms, %.4f ms per call, %d networks",
                 self.table.runtime.name, a, overhead, len(measured))  # fmt: skip

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
            memo[inst.key] = np.array([params / 1e6, flops / 1e6, 0.0])  # latency: the table
        return memo[inst.key]

    def _network_cost(self, net: nn.Module) -> np.ndarray:
        """Params and FLOPs of a whole network (its latency is calibrated separately)."""
        flops = count_flops(net, self._input_shape()).total
        return np.array([count_params(net) / 1e6, flops / 1e6, 0.0])

    def measure_latency(self, net: nn.Module) -> float:
        """Latency (ms) of a whole network through the table's runtime on its device at its
        batch size (timed as the table's calibration networks are)."""
        if self.table is None:
            raise ConfigError("this cost model has no latency device; pass latency_device")
        try:
            return self.table.measure(net, self._input_shape())
        finally:
            self.table.save()

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
        measured = self.measure_latency(build_network(arch))
        check = LatencyCheck(predicted, measured, runtime=str(self.runtime_name))
        log.info("latency prediction %.3f ms, measured %.3f ms through %s (relative error "
                 "%.1f%%)", check.predicted_ms, check.measured_ms, check.runtime,
                 100 * check.relative_error)  # fmt: skip
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
