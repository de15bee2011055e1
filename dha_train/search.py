"""ArchitectureSearch: ISTA-NAS encoding + budgets + freezing, the object the trainer uses.

Per step: ``sample()`` recovers alpha from b (Eqs. 5-6, solved in full every
``recover_every`` steps), takes the top-k support per unit, projects it onto the budget (a
support that breaks a budget is never returned) and returns Eq. 7 weights that carry the
gradient to b.
``penalty()`` is a soft hinge on the expected cost so b moves towards the budget. Per epoch:
``end_epoch()`` solves the LASSO fully (continuation on lambda) and freezes every unit whose
alpha moved by at most ``freeze_tol`` (L2) since the last epoch: its support is fixed and its
alpha folded into the operations' BN affine (ISTA-NAS one-stage).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dha_train.budgets import Budget, CostModel, project_support
from dha_train.ista import eq7_weights, lasso, measurement_matrices, top_k_support
from dha_train.spaces.arch import Architecture
from dha_train.spaces.base import Selection, Supernet, Support

__all__ = ["ArchitectureSearch", "support_scale"]

log = logging.getLogger(__name__)


def support_scale(weights: list[Tensor], signs: list[Tensor]) -> list[Tensor]:
    """Eq. 7's alpha on each unit's support, made positive and divided by its L1 norm; the
    signs (of the recovered x) and the norm are held constant.

    Deviation from the paper, needed in practice: b starts at 1e-3 * randn (ISTA-NAS), so the
    recovered alpha is ~1e-3 with random signs, and operations scaled by it vanish or flip
    sign from step to step (the supernet then barely learns). The forward weights here are
    |alpha_S| / ||alpha_S||_1: the relative weights are kept, and the gradient reaching b has
    Eq. 7's direction (scaled by sign / ||alpha_S||_1, which Adam on b absorbs).
    """
    return [
        w * sign / w.detach().abs().sum().clamp_min(1e-12)
        for w, sign in zip(weights, signs, strict=True)
    ]


class ArchitectureSearch(nn.Module):
    """The architecture parameters: one compressed vector b per decision unit (``self.b``)."""

    def __init__(
        self,
        supernet: Supernet,
        budget: Budget,
        cost_model: CostModel,
        *,
        seed: int,
        lam: float = 1e-5,
        freeze_tol: float = 1e-3,
        recover_every: int = 10,
        penalty_weight: float = 1.0,
    ) -> None:
        super().__init__()
        # Not a submodule: parameters() / state_dict() hold only b (and A), not the weights.
        self.__dict__["supernet"] = supernet
        self.budget, self.cost_model = budget, cost_model
        self.lam, self.freeze_tol, self.recover_every = lam, freeze_tol, recover_every
        self._samples = 0
        self.penalty_weight = penalty_weight
        self._sizes, self._topk = supernet.unit_sizes, supernet.unit_topk
        self._limits = budget.limits()
        # BudgetError before any training if even the cheapest child breaks the budget.
        self._last_feasible: Support = cost_model.check_budget(budget)
        a, rows = measurement_matrices(self._sizes, seed=seed)
        self.register_buffer("A", a)
        gen = torch.Generator().manual_seed(seed + 1)
        self.b = nn.Parameter(1e-3 * torch.randn(rows.shape, generator=gen) * rows)
        cols = torch.zeros(len(self._sizes), a.shape[2], dtype=torch.bool)
        for u, n in enumerate(self._sizes):
            cols[u, :n] = True
        self.register_buffer("_cols", cols, persistent=False)
        n_max = a.shape[2]
        costs = np.zeros((len(self._sizes), n_max, 3))
        for u, c in enumerate(cost_model.unit_costs):
            costs[u, : len(c)] = c
        self.register_buffer("_costs", torch.tensor(costs, dtype=torch.float32), persistent=False)
        self._a64 = a.double()
        self._x = lasso(self._a64, self.b.detach().double(), lam=lam)
        self._x_epoch = self._x.clone()
        self.frozen = [False] * len(self._sizes)
        self.frozen_support: list[tuple[int, ...] | None] = [None] * len(self._sizes)

    # -- state -------------------------------------------------------------------------
    @property
    def all_frozen(self) -> bool:
        return all(self.frozen)

    @property
    def num_frozen(self) -> int:
        return sum(self.frozen)

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "x": self._x.clone(),
            "x_epoch": self._x_epoch.clone(),
            "frozen": list(self.frozen),
            "samples": self._samples,
            "frozen_support": [list(s) if s is not None else [] for s in self.frozen_support],
            "last_feasible": [list(s) for s in self._last_feasible],
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._x, self._x_epoch = state["x"].double(), state["x_epoch"].double()
        self.frozen = [bool(f) for f in state["frozen"]]
        self._samples = int(state["samples"])
        self.frozen_support = [tuple(s) if f else None for s, f in
                               zip(state["frozen_support"], self.frozen, strict=True)]  # fmt: skip
        self._last_feasible = tuple(tuple(s) for s in state["last_feasible"])
        for unit, support in enumerate(self.frozen_support):
            if support is not None:  # weights already folded in the supernet's state
                self.supernet.set_scale_affine_trainable(unit, support, True)

    # -- architecture ------------------------------------------------------------------
    def _scores(self, x: Tensor) -> list[np.ndarray]:
        return [row[:n] for row, n in zip(x.abs().numpy(), self._sizes, strict=True)]

    def _feasible_support(self, x: Tensor) -> Support:
        proposed = list(top_k_support(x, self._sizes, self._topk))
        for unit, support in enumerate(self.frozen_support):
            if support is not None:
                proposed[unit] = support
        projected = project_support(
            tuple(proposed), self._scores(x), self.cost_model, self._limits, self.frozen
        )
        if projected is None:  # greedy got stuck: keep the last feasible architecture
            log.warning("budget projection found no feasible swap; keeping the last support")
            projected = self._last_feasible
        self._last_feasible = projected
        return projected

    def _weights(self, support: Support) -> list[Tensor]:
        """Eq. 7 on ``support``, scaled by :func:`support_scale` (differentiable in b)."""
        x = self._x.to(self.A.device, self.A.dtype)
        index = torch.tensor([list(s) for s in support], device=x.device)
        signs = torch.sign(torch.gather(x, 1, index))
        signs = torch.where(signs == 0, torch.ones_like(signs), signs)
        return support_scale(eq7_weights(self.A, self.b, x, support), list(signs.unbind(0)))

    def sample(self) -> Selection:
        """Recover alpha (Eqs. 5-6), pick and budget-project the support, Eq. 7 weights.

        The LASSO is solved in full every ``recover_every`` calls (ISTA-NAS's public code
        solves it once per epoch); in between, the support stays and Eq. 7 follows b.
        """
        if self._samples % self.recover_every == 0:
            self._x = lasso(self._a64, self.b.detach().to("cpu", torch.float64), lam=self.lam)
        self._samples += 1
        support = self._feasible_support(self._x)
        weights: list[Tensor | None] = list(self._weights(support))
        for unit, frozen in enumerate(self.frozen):
            if frozen:
                weights[unit] = None
        return Selection(support, weights)

    def current_support(self) -> Support:
        """The support the search would run now (frozen units fixed, budget-feasible)."""
        return self._feasible_support(self._x)

    def current_architecture(self) -> Architecture:
        return self.supernet.architecture(self.current_support())

    def recovered_alpha(self) -> list[np.ndarray]:
        """The last recovered alpha of every unit (for plots)."""
        return [row[:n].copy() for row, n in zip(self._x.numpy(), self._sizes, strict=True)]

    def dense_alpha(self, support: Support) -> list[Tensor]:
        """The weights ``sample`` gives (Eq. 7, scaled by ``support_scale``) scattered into
        each unit's full candidate vector (detached)."""
        with torch.no_grad():
            weights = self._weights(support)
        dense = []
        for unit, (w, s) in enumerate(zip(weights, support, strict=True)):
            d = torch.zeros(self._sizes[unit], device=w.device)
            d[list(s)] = w
            dense.append(d)
        return dense

    # -- budget ------------------------------------------------------------------------
    def expected_cost(self) -> Tensor:
        """(params_m, flops_m, latency_ms) expected under p = |alpha| / sum |alpha| (Eq. 7
        over all candidates, so differentiable in b); frozen units at their fixed support."""
        x = self._x.to(self.A.device, self.A.dtype)
        ax = torch.bmm(self.A, x.unsqueeze(2)).squeeze(2)
        const = torch.einsum("umn,um->un", self.A, ax) - x
        alpha = torch.einsum("umn,um->un", self.A, self.b) - const
        p = alpha.abs() * self._cols
        p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
        topk = torch.tensor(self._topk, device=p.device, dtype=p.dtype).unsqueeze(1)
        per_unit = torch.einsum("un,unk->uk", p * topk, self._costs)
        frozen_rows = []
        for unit, support in enumerate(self.frozen_support):
            if support is not None:
                fixed = self._costs[unit, list(support)].sum(0)
                frozen_rows.append((unit, fixed))
        if frozen_rows:
            mask = torch.tensor(self.frozen, device=p.device).unsqueeze(1)
            replaced = torch.zeros_like(per_unit)
            for unit, fixed in frozen_rows:
                replaced[unit] = fixed
            per_unit = torch.where(mask, replaced, per_unit)
        return torch.as_tensor(
            self.cost_model.fixed, dtype=p.dtype, device=p.device
        ) + per_unit.sum(0)

    def penalty(self) -> Tensor:
        """Soft budget penalty: weight * sum_i relu(E[c_i] / C_i - 1) over bounded resources."""
        finite = np.isfinite(self._limits)
        if not finite.any():
            return self.b.sum() * 0.0
        expected = self.expected_cost()
        idx = torch.tensor(np.flatnonzero(finite), device=expected.device)
        limits = torch.tensor(self._limits[finite], device=expected.device, dtype=expected.dtype)
        return self.penalty_weight * torch.relu(expected[idx] / limits - 1.0).sum()

    # -- freezing ----------------------------------------------------------------------
    def _freeze(self, units: list[int], support: Support) -> None:
        dense = self.dense_alpha(support)
        for unit in units:
            self.frozen[unit], self.frozen_support[unit] = True, support[unit]
            self.supernet.fold_unit_scale(unit, dense[unit])
        self._last_feasible = support

    def end_epoch(self) -> list[int]:
        """Recover alpha fully and freeze the units whose alpha stopped moving; returns them."""
        b = self.b.detach().to("cpu", torch.float64)
        x_new = lasso(self._a64, b, lam=self.lam)
        moved = (x_new - self._x_epoch).norm(dim=1).tolist()
        self._x, self._x_epoch = x_new, x_new.clone()
        newly = [u for u, m in enumerate(moved) if not self.frozen[u] and m <= self.freeze_tol]
        if newly:
            self._freeze(newly, self._feasible_support(x_new))
            log.info("froze units %s (%d/%d frozen)", newly, self.num_frozen, len(self.frozen))
        return newly

    def freeze_all(self) -> None:
        """Freeze every remaining unit at the current support (e.g. when training ends)."""
        rest = [u for u, f in enumerate(self.frozen) if not f]
        if rest:
            self._freeze(rest, self.current_support())
