"""DHA Eq. 1, c_i(alpha) <= C_i: the budget, its hard projection and its soft penalty.

This module is Eq. 1's one home. :class:`Budget` holds the limits C_i; a sampled support is
made feasible by :func:`project_support` (the nearest support, in |x| score lost, that meets
every limit), and the differentiable soft form :func:`soft_penalty` pushes the *expected*
cost (Eq. 7 over all candidates, :meth:`dha_train.nas.search.ArchitectureSearch.expected_cost`)
under the limits. The costs themselves come from :mod:`dha_train.nas.cost_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from dha_train.errors import ConfigError
from dha_train.spaces.base import Support

if TYPE_CHECKING:
    from dha_train.nas.cost_model import CostModel

__all__ = ["METRICS", "Budget", "project_support", "soft_penalty"]

METRICS = ("params_m", "flops_m", "latency_ms")


@dataclass(frozen=True)
class Budget:
    """Upper bounds on the child network; None leaves a resource unbounded."""

    max_params_m: float | None = None
    max_flops_m: float | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_params_m", "max_flops_m", "max_latency_ms"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"budget {name}={value}; expected a positive number or None")

    def limits(self) -> np.ndarray:
        """(params_m, flops_m, latency_ms) limits, inf where unbounded."""
        raw = (self.max_params_m, self.max_flops_m, self.max_latency_ms)
        return np.array([np.inf if v is None else float(v) for v in raw])

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in vars(self).items() if v is not None]
        return ", ".join(parts) or "unbounded"


def _excess(totals: np.ndarray, limits: np.ndarray) -> np.ndarray:
    finite = np.isfinite(limits)
    over = np.maximum(totals[..., finite] - limits[finite], 0.0) / limits[finite]
    return over.sum(-1)


def project_support(
    support: Support,
    scores: Sequence[np.ndarray],
    model: CostModel,
    limits: np.ndarray,
    fixed_units: Sequence[bool],
) -> Support | None:
    """Nearest feasible support: greedily swap units to cheaper supports, each time taking
    the swap that removes most budget excess per |x| score lost. None if it gets stuck."""
    current = list(support)
    total = model.cost_vector(current)
    while _excess(total, limits) > 0:
        best, best_ratio = None, 0.0
        now = _excess(total, limits)
        for unit, fixed in enumerate(fixed_units):
            if fixed:
                continue
            options = model.unit_options(unit)
            idx = np.array(options)
            delta = model.unit_costs[unit][idx].sum(1) - model.unit_costs[unit][
                list(current[unit])
            ].sum(0)
            gain = now - _excess(total + delta, limits)
            loss = scores[unit][list(current[unit])].sum() - scores[unit][idx].sum(1)
            ratio = np.where(gain > 1e-12, gain / np.maximum(loss, 1e-12), 0.0)
            i = int(np.argmax(ratio))
            if ratio[i] > best_ratio:
                best, best_ratio = (unit, options[i], delta[i]), ratio[i]
        if best is None:
            return None
        unit, option, d = best
        current[unit], total = option, total + d
    return tuple(current)


def soft_penalty(expected: Tensor, limits: np.ndarray, weight: float) -> Tensor:
    """weight * sum_i relu(E[c_i] / C_i - 1) over the bounded resources i (Eq. 1, soft)."""
    finite = np.isfinite(limits)
    idx = torch.tensor(np.flatnonzero(finite), device=expected.device)
    bound = torch.tensor(limits[finite], device=expected.device, dtype=expected.dtype)
    return weight * torch.relu(expected[idx] / bound - 1.0).sum()
