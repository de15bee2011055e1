"""A short real search: every sampled child meets the budget, units freeze, state round-trips."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dha_train.budgets import Budget, CostModel
from dha_train.errors import BudgetError
from dha_train.search import ArchitectureSearch
from dha_train.spaces import build_supernet
from dha_train.spaces.base import SpaceConfig

CONFIGS = {
    "mobilenet": SpaceConfig("mobilenet", 10, 32, width_mult=0.35),
    "cell": SpaceConfig("cell", 10, 16, init_channels=8, layers=5),
}


def _setup(space: str, slack: float = 1.15):
    torch.manual_seed(0)
    net = build_supernet(CONFIGS[space])
    model = CostModel(net)
    cheapest = model.cost(model.cheapest_support())
    budget = Budget(max_params_m=cheapest.params_m * slack, max_flops_m=cheapest.flops_m * 2)
    return net, model, budget


def _train(net, search, steps: int, lr_b: float) -> list[tuple[tuple[int, ...], ...]]:
    r = net.config.resolution
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 3, r, r, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    w_opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    b_opt = torch.optim.Adam(search.parameters(), lr=lr_b, betas=(0.5, 0.999))
    supports = []
    for _ in range(steps):
        selection = search.sample()
        supports.append(selection.support)
        loss = F.cross_entropy(net(x, selection), y) + search.penalty()
        w_opt.zero_grad()
        b_opt.zero_grad()
        loss.backward()
        w_opt.step()
        b_opt.step()
    return supports


@pytest.mark.parametrize("space", sorted(CONFIGS))
def test_no_sampled_child_breaks_the_budget(space: str) -> None:
    net, model, budget = _setup(space)
    search = ArchitectureSearch(net, budget, model, seed=0)
    first = search.b.detach().clone()
    for _ in range(3):
        for support in _train(net, search, 4, lr_b=3e-2):
            assert (model.cost_vector(support)[:2] <= budget.limits()[:2] + 1e-12).all()
        search.end_epoch()
    assert not torch.equal(first, search.b.detach())  # the loss (and penalty) reached b
    arch = search.current_architecture()
    assert model.cost(arch).params_m <= budget.max_params_m


def test_units_freeze_fold_and_state_round_trips() -> None:
    net, model, budget = _setup("mobilenet")
    search = ArchitectureSearch(net, budget, model, seed=1)
    _train(net, search, 2, lr_b=1e-7)  # b barely moves: every unit's alpha settles
    frozen = search.end_epoch()
    assert frozen and search.num_frozen == len(frozen) and search.all_frozen
    selection = search.sample()
    assert all(w is None for w in selection.weights)
    assert [selection.support[u] for u in range(net.num_units())] == search.frozen_support
    state = search.state_dict()
    again = ArchitectureSearch(net, budget, model, seed=1)
    again.load_state_dict(state)
    assert again.all_frozen and again.frozen_support == search.frozen_support
    assert again.current_architecture() == search.current_architecture()


def test_units_do_not_freeze_while_alpha_moves() -> None:
    net, model, budget = _setup("cell")
    search = ArchitectureSearch(net, budget, model, seed=0, freeze_tol=1e-6)
    _train(net, search, 3, lr_b=1e-1)
    assert search.end_epoch() == [] and search.num_frozen == 0


def test_budget_below_cheapest_fails_before_training() -> None:
    net, model, _ = _setup("cell")
    cheapest = model.cost(model.cheapest_support())
    with pytest.raises(BudgetError, match="cheapest"):
        ArchitectureSearch(net, Budget(max_flops_m=cheapest.flops_m * 0.5), model, seed=0)
