"""Eqs. 3-4: the analytic one-step hypergradient against finite differences, and the bounds."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dha_train.errors import ConfigError
from dha_train.hpo import HyperBounds, HyperSGD


def _setup() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x1, x2 = torch.randn(16, 6, dtype=torch.double), torch.randn(16, 6, dtype=torch.double)
    y1, y2 = torch.randint(0, 3, (16,)), torch.randint(0, 3, (16,))
    return net, (x1, y1, x2, y2)


def _two_steps(
    net: nn.Module,
    data: tuple[torch.Tensor, ...],
    lr: float,
    wd: float,
    opt_state: dict | None = None,
) -> tuple[float, HyperSGD, nn.Module]:
    """A warm-up step (so the momentum buffer is non-trivial), then the step under test with
    (lr, wd); returns the loss on batch 2 at theta_{t+1}."""
    net = copy.deepcopy(net)
    x1, y1, x2, y2 = data
    opt = HyperSGD(
        list(net.parameters()),
        lr=0.05,
        weight_decay=1e-3,
        momentum=0.9,
        bounds=HyperBounds(lr=(0.0, 1.0), wd=(0.0, 1.0)),
    )
    nn.functional.cross_entropy(net(x2), y2).backward()
    opt.step()
    opt.zero_grad()
    opt.lr.fill_(lr)
    opt.wd.fill_(wd)
    nn.functional.cross_entropy(net(x1), y1).backward()
    opt.step()
    opt.zero_grad()
    loss2 = nn.functional.cross_entropy(net(x2), y2)
    return loss2.item(), opt, net


def test_hypergradient_matches_finite_differences() -> None:
    net, data = _setup()
    lr, wd = 0.1, 5e-3
    _, opt, stepped = _two_steps(net, data, lr, wd)
    x2, y2 = data[2], data[3]
    loss2 = nn.functional.cross_entropy(stepped(x2), y2)
    grads = torch.autograd.grad(loss2, list(stepped.parameters()))
    h = opt.hypergradient(list(grads))
    eps = 1e-6
    fd_lr = (_two_steps(net, data, lr + eps, wd)[0] - _two_steps(net, data, lr - eps, wd)[0]) / (
        2 * eps
    )
    fd_wd = (_two_steps(net, data, lr, wd + eps)[0] - _two_steps(net, data, lr, wd - eps)[0]) / (
        2 * eps
    )
    assert float(h[0]) == pytest.approx(fd_lr, rel=1e-5, abs=1e-9)
    assert float(h[1]) == pytest.approx(fd_wd, rel=1e-5, abs=1e-9)
    assert abs(fd_wd) > 1e-6 and abs(fd_lr) > 1e-3  # both directions carry signal


def test_step_equals_torch_sgd() -> None:
    net, (x1, y1, _, _) = _setup()
    ref = copy.deepcopy(net)
    ours = HyperSGD(list(net.parameters()), lr=0.1, weight_decay=1e-2, momentum=0.9)
    theirs = torch.optim.SGD(ref.parameters(), lr=0.1, weight_decay=1e-2, momentum=0.9)
    for _ in range(3):
        for model, opt in ((net, ours), (ref, theirs)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x1), y1).backward()
            opt.step()
    for a, b in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_parameters_without_gradient_do_not_move_nor_count() -> None:
    net, (x1, y1, x2, y2) = _setup()
    opt = HyperSGD(list(net.parameters()), lr=0.1, weight_decay=1e-2)
    frozen = [p.detach().clone() for p in net[2].parameters()]
    net[0](x1).sum().backward()  # only the first layer gets gradients
    opt.step()
    assert opt.last_stepped == [0, 1]
    for p, q in zip(net[2].parameters(), frozen, strict=True):
        assert torch.equal(p, q)
    grads = [torch.ones_like(p) for p in net.parameters()]
    only_last = [None, None, grads[2], grads[3]]
    assert torch.equal(opt.hypergradient(only_last), torch.zeros(2, dtype=torch.double))


def test_bounds_hold_under_large_hypergradients() -> None:
    net, (x1, y1, x2, y2) = _setup()
    bounds = HyperBounds(lr=(0.01, 0.2), wd=(1e-4, 1e-3))
    opt = HyperSGD(list(net.parameters()), lr=0.1, weight_decay=5e-4, bounds=bounds, hyper_lr=1e3)
    seen = []
    for i in range(6):
        x, y = (x1, y1) if i % 2 else (x2, y2)
        loss = nn.functional.cross_entropy(net(x), y)
        grads = torch.autograd.grad(loss, list(net.parameters()))
        if i:
            opt.hyper_step([g * (1 if i % 4 < 2 else -1) for g in grads])
        for p, g in zip(net.parameters(), grads, strict=True):
            p.grad = g
        opt.step()
        opt.zero_grad()
        seen.append((float(opt.lr), float(opt.wd)))
    for lr, wd in seen:
        assert 0.01 <= lr <= 0.2 and 1e-4 <= wd <= 1e-3
    assert {lr for lr, _ in seen} & {0.01, 0.2}  # a bound was actually hit


def test_initial_value_outside_bounds_is_a_user_error() -> None:
    net, _ = _setup()
    with pytest.raises(ConfigError, match="outside its bounds"):
        HyperSGD(
            list(net.parameters()),
            lr=0.5,
            weight_decay=0.0,
            bounds=HyperBounds(lr=(0.01, 0.2), wd=(0.0, 1e-3)),
        )


@pytest.mark.parametrize("learned", ["lr", "wd"])
def test_one_hyper_step_lowers_the_loss_on_the_second_batch(learned: str) -> None:
    """The sign of Eq. 4: redoing the step with the updated eta lowers L(theta_{t+1}) on the
    second mini-batch (each of lr and wd alone, the other held by its bounds)."""
    net, data = _setup()
    lr, wd = 0.1, 5e-3
    loss_before, opt, stepped = _two_steps(net, data, lr, wd)
    opt.bounds = HyperBounds(
        lr=(0.0, 1.0) if learned == "lr" else (lr, lr),
        wd=(0.0, 1.0) if learned == "wd" else (wd, wd),
    )
    opt.hyper_lr = 1e-2 if learned == "lr" else 1e2  # wd's hypergradient is ~1e4 times smaller
    loss2 = nn.functional.cross_entropy(stepped(data[2]), data[3])
    opt.hyper_step(list(torch.autograd.grad(loss2, list(stepped.parameters()))))
    new_lr, new_wd = float(opt.lr), float(opt.wd)
    assert (new_lr != lr) == (learned == "lr") and (new_wd != wd) == (learned == "wd")
    loss_after, _, _ = _two_steps(net, data, new_lr, new_wd)
    assert loss_after < loss_before - 1e-9, (learned, loss_before, loss_after)
