"""ArchitectureSearch: ISTA-NAS encoding + budgets + freezing, the object the trainer uses.

Per training step ``sample()`` returns the child to run:
- during the *warm-up* (the first ``warmup_steps`` samples) a uniformly random,
  budget-feasible support per step with constant weights 1/k, and b is not trained (one-stage
  searches train the weights alone first, so that candidates are compared once trained; a
  deviation, see README);
- afterwards it recovers alpha from b (Eqs. 5-6, solved in full every ``recover_every``
  steps), takes the top-k support per unit, projects it onto the budget (a support that breaks
  a budget is never returned) and returns the forward weights of :func:`forward_weights`,
  which carry Eq. 7's gradient to b.
``penalty()`` is Eq. 1's soft form (:func:`dha_train.nas.budgets.soft_penalty`) on the
expected cost, which uses Eq. 7 (:func:`dha_train.nas.ista.eq7_alpha`, its one home) over all
candidates, so b moves towards the budget.

Freezing (``end_epoch``): a unit freezes (its support fixed, its weight folded into the
operations' BN affine, ISTA-NAS one-stage) under one of two rules:
- ``"window"`` (default): its recovered alpha moved by at most ``freeze_rel_tol`` of its own
  norm over the last ``freeze_window`` search steps and its support did not change in that
  window; checked only after the warm-up and only when the trainer allows it (validation
  top-1 clearly above chance). Its meaning depends neither on the epoch length nor on b's
  scale.
- ``"ista"``: ISTA-NAS's ||x_new - x_last_epoch||_2 <= ``freeze_tol`` once per epoch (tuned
  for epochs of hundreds of steps; on the default digits run it froze 12 of 21 units after 19
  steps while validation top-1 was at chance).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dha_train.engine.seeding import derive_seed
from dha_train.nas.budgets import Budget, project_support, soft_penalty
from dha_train.nas.cost_model import CostModel
from dha_train.nas.ista import eq7_alpha, eq7_weights, lasso, measurement_matrices, top_k_support
from dha_train.spaces.arch import Architecture
from dha_train.spaces.base import Selection, Supernet, Support

__all__ = ["ArchitectureSearch", "forward_weights"]

log = logging.getLogger(__name__)


def forward_weights(alpha_s: list[Tensor], weighting: str) -> list[Tensor]:
    """The weights the selected operations are scaled by, from Eq. 7's alpha on the support.

    ``"alpha"``: |alpha_S|, the paper's alpha as a magnitude (the support is the top-k |x|, so
    a branch is never negated, also when alpha crosses zero between two recoveries).
    ``"l1"`` (default, a deviation): |alpha_S| / ||alpha_S||_1 with the norm held constant, so
    each unit's weights sum to 1 while the gradient reaching b keeps the direction of
    d|alpha_S|. b starts at 1e-3 * randn (ISTA-NAS), so raw alpha scales every operation by
    ~1e-3 at first. With top-1 units (mobilenet space) every forward weight is exactly 1.
    """
    if weighting == "alpha":
        return [w.abs() for w in alpha_s]
    return [w.abs() / w.detach().abs().sum().clamp_min(1e-12) for w in alpha_s]


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
        recover_every: int = 10,
        penalty_weight: float = 1.0,
        weighting: str = "l1",
        freeze_rule: str = "window",
        freeze_tol: float = 1e-3,
        freeze_window: int = 50,
        freeze_rel_tol: float = 0.05,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        # Not a submodule: parameters() / state_dict() hold only b (and A), not the weights.
        self.__dict__["supernet"] = supernet
        self.budget, self.cost_model = budget, cost_model
        self.lam, self.recover_every, self.penalty_weight = lam, recover_every, penalty_weight
        self.weighting, self.freeze_rule, self.freeze_tol = weighting, freeze_rule, freeze_tol
        self.freeze_window, self.freeze_rel_tol = freeze_window, freeze_rel_tol
        self.warmup_steps = warmup_steps
        self._samples = 0
        self._sizes, self._topk = supernet.unit_sizes, supernet.unit_topk
        self._limits = budget.limits()
        # BudgetError before any training if even the cheapest child breaks the budget.
        self._last_feasible: Support = cost_model.check_budget(budget)
        a, rows = measurement_matrices(self._sizes, seed=derive_seed(seed, "measurement"))
        self.register_buffer("A", a)
        gen = torch.Generator().manual_seed(derive_seed(seed, "arch_init"))
        self.b = nn.Parameter(1e-3 * torch.randn(rows.shape, generator=gen) * rows)
        self._warmup_gen = torch.Generator().manual_seed(derive_seed(seed, "warmup_paths"))
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
        # (sample index, x, support) at every recovery after the warm-up: the freezing window
        self._trail: list[tuple[int, Tensor, Support]] = []
        self.frozen = [False] * len(self._sizes)
        self.frozen_support: list[tuple[int, ...] | None] = [None] * len(self._sizes)

    # -- state -------------------------------------------------------------------------
    @property
    def all_frozen(self) -> bool:
        return all(self.frozen)

    @property
    def num_frozen(self) -> int:
        return sum(self.frozen)

    @property
    def in_warmup(self) -> bool:
        """True while the last ``sample()`` was a warm-up step (b is not to be trained)."""
        return self.warmup_steps > 0 and self._samples <= self.warmup_steps

    @property
    def search_steps(self) -> int:
        """Samples taken after the warm-up."""
        return max(0, self._samples - self.warmup_steps)

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "x": self._x.clone(),
            "x_epoch": self._x_epoch.clone(),
            "frozen": list(self.frozen),
            "samples": self._samples,
            "frozen_support": [list(s) if s is not None else [] for s in self.frozen_support],
            "last_feasible": [list(s) for s in self._last_feasible],
            "warmup_gen": self._warmup_gen.get_state(),
            "trail": [(i, x.clone(), [list(s) for s in sup]) for i, x, sup in self._trail],
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._x, self._x_epoch = state["x"].double(), state["x_epoch"].double()
        self.frozen = [bool(f) for f in state["frozen"]]
        self._samples = int(state["samples"])
        self.frozen_support = [tuple(s) if f else None for s, f in
                               zip(state["frozen_support"], self.frozen, strict=True)]  # fmt: skip
        self._last_feasible = tuple(tuple(s) for s in state["last_feasible"])
        self._warmup_gen.set_state(state["warmup_gen"])
        self._trail = [
            (int(i), x.double(), tuple(tuple(s) for s in sup)) for i, x, sup in state["trail"]
        ]
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
        """:func:`forward_weights` of Eq. 7 on ``support`` (differentiable in b)."""
        x = self._x.to(self.A.device, self.A.dtype)
        return forward_weights(eq7_weights(self.A, self.b, x, support), self.weighting)

    def _selection(self, support: Support, weights: list[Tensor]) -> Selection:
        out: list[Tensor | None] = list(weights)
        for unit, frozen in enumerate(self.frozen):
            if frozen:
                out[unit] = None
        return Selection(support, out)

    def _warmup_selection(self) -> Selection:
        """A uniformly random feasible support (frozen units kept), constant weights 1/k."""
        scores = torch.rand(self._x.shape, generator=self._warmup_gen, dtype=torch.float64)
        support = self._feasible_support(scores * self._cols)
        weights = [
            torch.full((len(s),), 1.0 / len(s), device=self.A.device, dtype=self.A.dtype)
            for s in support
        ]
        return self._selection(support, weights)

    def sample(self) -> Selection:
        """The child of this training step (advances the step count; see the module doc)."""
        self._samples += 1
        if self.in_warmup:
            return self._warmup_selection()
        if (self.search_steps - 1) % self.recover_every == 0:
            self._recover()
        support = self._feasible_support(self._x)
        return self._selection(support, self._weights(support))

    def _recover(self) -> None:
        """Solve the LASSO of Eqs. 5-6 in full and remember x for the freezing window."""
        self._x = lasso(self._a64, self.b.detach().to("cpu", torch.float64), lam=self.lam)
        support = top_k_support(self._x, self._sizes, self._topk)
        self._trail.append((self._samples, self._x.clone(), support))
        horizon = self._samples - self.freeze_window - self.recover_every
        self._trail = [t for t in self._trail if t[0] >= horizon]

    @torch.no_grad()
    def selection(self) -> Selection:
        """The current child (for evaluation): the search's support and weights, no step."""
        support = self.current_support()
        return self._selection(support, self._weights(support))

    def current_support(self) -> Support:
        """The support the search would run now (frozen units fixed, budget-feasible)."""
        return self._feasible_support(self._x)

    def current_architecture(self) -> Architecture:
        return self.supernet.architecture(self.current_support())

    def recovered_alpha(self) -> list[np.ndarray]:
        """The last recovered alpha of every unit (for plots)."""
        return [row[:n].copy() for row, n in zip(self._x.numpy(), self._sizes, strict=True)]

    def dense_alpha(self, support: Support) -> list[Tensor]:
        """The weights ``sample`` gives on ``support`` scattered into each unit's full
        candidate vector (detached)."""
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
        alpha = eq7_alpha(self.A, self.b, self._x.to(self.A.device, self.A.dtype))
        p = alpha.abs() * self._cols
        p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
        topk = torch.tensor(self._topk, device=p.device, dtype=p.dtype).unsqueeze(1)
        per_unit = torch.einsum("un,unk->uk", p * topk, self._costs)
        if self.num_frozen:
            fixed = torch.zeros_like(per_unit)
            for unit, support in enumerate(self.frozen_support):
                if support is not None:
                    fixed[unit] = self._costs[unit, list(support)].sum(0)
            mask = torch.tensor(self.frozen, device=p.device).unsqueeze(1)
            per_unit = torch.where(mask, fixed, per_unit)
        return torch.as_tensor(
            self.cost_model.fixed, dtype=p.dtype, device=p.device
        ) + per_unit.sum(0)

    def penalty(self) -> Tensor:
        """Eq. 1's soft penalty on the expected cost (:func:`budgets.soft_penalty`); zero,
        with no gradient to b, during the warm-up or without a bounded resource."""
        if not np.isfinite(self._limits).any() or self.in_warmup:
            return self.b.sum() * 0.0
        return soft_penalty(self.expected_cost(), self._limits, self.penalty_weight)

    # -- freezing ----------------------------------------------------------------------
    def _freeze(self, units: list[int], support: Support) -> None:
        dense = self.dense_alpha(support)
        for unit in units:
            self.frozen[unit], self.frozen_support[unit] = True, support[unit]
            self.supernet.fold_unit_scale(unit, dense[unit])
        self._last_feasible = support

    def _settled_by_window(self, x_new: Tensor) -> list[bool]:
        """Per unit: alpha moved <= freeze_rel_tol of its norm over the last freeze_window
        search steps, and its top-k support stayed the same over that window (called after
        the warm-up only: ``end_epoch`` returns before it)."""
        now = self._samples
        old = [t for t in self._trail if t[0] <= now - self.freeze_window]
        if not old:
            return [False] * len(self._sizes)
        start = old[-1][0]
        window = [t for t in self._trail if t[0] >= start]
        support = top_k_support(x_new, self._sizes, self._topk)
        rel = (x_new - old[-1][1]).norm(dim=1) / x_new.norm(dim=1).clamp_min(1e-30)
        return [
            float(rel[u]) <= self.freeze_rel_tol
            and all(set(t[2][u]) == set(support[u]) for t in window)
            for u in range(len(self._sizes))
        ]

    def end_epoch(self, *, allow_freeze: bool = True) -> list[int]:
        """Recover alpha fully and freeze the units that have settled (see the module doc);
        the ``"window"`` rule freezes nothing unless ``allow_freeze``. Returns the new ones."""
        if self.in_warmup:
            return []
        x_new = lasso(self._a64, self.b.detach().to("cpu", torch.float64), lam=self.lam)
        if self.freeze_rule == "ista":
            moved = (x_new - self._x_epoch).norm(dim=1).tolist()
            settled = [m <= self.freeze_tol for m in moved]
        elif allow_freeze:
            settled = self._settled_by_window(x_new)
        else:
            settled = [False] * len(self._sizes)
        self._x, self._x_epoch = x_new, x_new.clone()
        newly = [u for u, s in enumerate(settled) if s and not self.frozen[u]]
        if newly:
            self._freeze(newly, self._feasible_support(x_new))
        return newly

    def freeze_all(self) -> list[int]:
        """Freeze every remaining unit at the current support (e.g. the freeze deadline);
        returns the units it froze."""
        rest = [u for u, f in enumerate(self.frozen) if not f]
        if rest:
            self._freeze(rest, self.current_support())
        return rest
