"""A short real search: every sampled child meets the budget, units freeze, state round-trips.

Mutations that the method's tests must catch (each was applied once on 2026-12-01 and made at
least one test fail; rerun them after changing a guarded equation):
- Eq. 4 as an ascent, on lr or on wd (hpo.hyper_step)             -> test_hpo
- tau never updated (train_step skips the policy step)            -> test_trainer (dha KL floor)
- DA magnitudes constant at 10; DA signs always +                 -> test_augment
- the soft budget penalty's sign flipped                          -> this module
- the L1 forward weighting removed (raw alpha forward)            -> this module
- Eq. 7's correction term with the wrong sign                     -> test_ista
- tau's collapse guard removed; KL computed as the entropy        -> test_policy
- the window rule freezing without permission; b trained in warm-up -> this module
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dha_train.errors import BudgetError
from dha_train.nas.budgets import Budget
from dha_train.nas.cost_model import CostModel
from dha_train.nas.ista import eq7_weights
from dha_train.nas.search import ArchitectureSearch
from dha_train.spaces import build_supernet
from tests.conftest import SPACE_CONFIGS as CONFIGS


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


def _round_trips(net, model, budget, search: ArchitectureSearch) -> None:
    state = search.state_dict()
    again = ArchitectureSearch(net, budget, model, seed=1, freeze_rule=search.freeze_rule)
    again.load_state_dict(state)
    assert again.all_frozen and again.frozen_support == search.frozen_support
    assert again.current_architecture() == search.current_architecture()


def test_ista_rule_freezes_settled_units_folds_and_round_trips() -> None:
    net, model, budget = _setup("mobilenet")
    search = ArchitectureSearch(net, budget, model, seed=1, freeze_rule="ista")
    _train(net, search, 2, lr_b=1e-7)  # b barely moves: every unit's alpha settles
    frozen = search.end_epoch()
    assert frozen and search.num_frozen == len(frozen) and search.all_frozen
    selection = search.sample()
    assert all(w is None for w in selection.weights)
    assert [selection.support[u] for u in range(net.num_units())] == search.frozen_support
    _round_trips(net, model, budget, search)


def test_window_rule_needs_a_full_window_and_permission() -> None:
    net, model, budget = _setup("mobilenet")
    search = ArchitectureSearch(net, budget, model, seed=1, freeze_window=6, recover_every=2)
    _train(net, search, 4, lr_b=1e-7)
    assert search.end_epoch() == []  # settled, but the window is not full yet
    _train(net, search, 4, lr_b=1e-7)
    assert search.end_epoch(allow_freeze=False) == [] and search.num_frozen == 0
    frozen = search.end_epoch()
    assert frozen == list(range(net.num_units())) and search.all_frozen
    _round_trips(net, model, budget, search)


def test_the_deadline_waits_for_the_accuracy_gate_until_the_last_epoch() -> None:
    """freeze_by's deadline freezes every unit only once validation top-1 passes the gate
    (32.5% on 10 classes); below it the search goes on, and the phase's last epoch freezes
    every unit whatever the accuracy."""
    from dha_train.engine.freezing import freeze_at_epoch_end
    from dha_train.train_config import TrainConfig

    net, model, budget = _setup("mobilenet")
    cfg = TrainConfig(space=CONFIGS["mobilenet"], freeze_by=0.5)
    units = list(range(net.num_units()))

    def epoch_end(search: ArchitectureSearch, epoch: int, val_top1: float) -> list[dict]:
        record = {"epoch": epoch + 1, "val_top1": val_top1}
        return freeze_at_epoch_end(
            search, cfg, record, epoch=epoch, epochs=4, step=10 * epoch, num_classes=10
        )

    below = ArchitectureSearch(net, budget, model, seed=1)
    assert epoch_end(below, 1, 21.1) == [] and below.num_frozen == 0  # the deadline, below
    assert epoch_end(below, 2, 30.0) == [] and below.num_frozen == 0
    (last,) = epoch_end(below, 3, 30.0)
    assert last["reason"] == "end_of_phase" and last["units"] == units and below.all_frozen
    above = ArchitectureSearch(net, budget, model, seed=1)
    (event,) = epoch_end(above, 1, 40.0)
    assert event["reason"] == "deadline" and event["units"] == units and event["epoch"] == 2
    assert above.all_frozen


@pytest.mark.parametrize("rule", ["window", "ista"])
def test_units_do_not_freeze_while_alpha_moves(rule: str) -> None:
    net, model, budget = _setup("cell")
    search = ArchitectureSearch(
        net, budget, model, seed=0, freeze_rule=rule, freeze_tol=1e-6, freeze_window=4,
        recover_every=1,
    )  # fmt: skip
    for _ in range(3):
        _train(net, search, 3, lr_b=1e-1)
        assert search.end_epoch() == [] and search.num_frozen == 0


def test_warmup_samples_random_feasible_paths_and_leaves_b_alone() -> None:
    net, model, budget = _setup("mobilenet", slack=3.0)
    search = ArchitectureSearch(net, budget, model, seed=0, warmup_steps=30)
    first = search.b.detach().clone()
    supports = _train(net, search, 30, lr_b=3e-2)
    assert search.in_warmup and torch.equal(first, search.b.detach())
    assert search.end_epoch() == []  # nothing freezes during the warm-up
    for support in supports:
        assert (model.cost_vector(support)[:2] <= budget.limits()[:2] + 1e-12).all()
    # every layer sees several of its candidates (the search's own support is one fixed op)
    seen = [len({s[u] for s in supports}) for u in range(net.num_units())]
    assert min(seen) >= 3, seen
    _train(net, search, 3, lr_b=3e-2)
    assert not search.in_warmup and not torch.equal(first, search.b.detach())


def test_budget_below_cheapest_fails_before_training() -> None:
    net, model, _ = _setup("cell")
    cheapest = model.cost(model.cheapest_support())
    with pytest.raises(BudgetError, match="cheapest"):
        ArchitectureSearch(net, Budget(max_flops_m=cheapest.flops_m * 0.5), model, seed=0)


def test_budget_penalty_pushes_the_expected_cost_below_the_budget() -> None:
    """Eq. 1's soft penalty is positive over budget, and descending it lowers E[cost]."""
    net, model, _ = _setup("cell")
    cheapest = model.cost(model.cheapest_support())
    search = ArchitectureSearch(net, Budget(max_params_m=cheapest.params_m * 1.02), model, seed=0)
    before = float(search.expected_cost()[0])
    assert before > cheapest.params_m * 1.02 and float(search.penalty()) > 0
    opt = torch.optim.Adam(search.parameters(), lr=1e-5)  # steps well below b's 1e-3 scale
    for _ in range(20):
        opt.zero_grad()
        search.penalty().backward()
        opt.step()
    assert float(search.expected_cost()[0]) < before - 1e-5


@pytest.mark.parametrize("weighting", ["l1", "alpha"])
def test_forward_weights_are_eq7_magnitudes_never_negated(weighting: str) -> None:
    """The weights the selected ops run with: |alpha_S| (paper) or |alpha_S| / ||alpha_S||_1,
    with alpha_S from Eq. 7; a branch is never negated, even after b changes sign."""
    net, model, budget = _setup("cell")
    search = ArchitectureSearch(net, budget, model, seed=0, weighting=weighting)
    selection = search.sample()
    x = search._x.float()
    alpha = eq7_weights(search.A, search.b, x, selection.support)
    with torch.no_grad():
        search.b.mul_(-3.0)  # Eq. 7's alpha now has the opposite sign of the recovered x
    flipped = search.sample()  # same recovery window: the support stays
    assert flipped.support == selection.support
    alpha_flipped = eq7_weights(search.A, search.b, x, flipped.support)
    for got, a, w0 in zip(flipped.weights, alpha_flipped, selection.weights, strict=True):
        assert (got >= 0).all() and (w0 >= 0).all()
        expect = a.abs() if weighting == "alpha" else a.abs() / a.abs().sum()
        torch.testing.assert_close(got, expect)
    for w, a in zip(selection.weights, alpha, strict=True):
        expect = a.abs() if weighting == "alpha" else a.abs() / a.abs().sum()
        torch.testing.assert_close(w, expect)
