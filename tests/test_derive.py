"""The derived child: only chosen ops, trained weights, alpha folded; equals the supernet."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dha_train.nas.budgets import Budget
from dha_train.nas.cost_model import CostModel
from dha_train.nas.derive import derive_child
from dha_train.nas.search import ArchitectureSearch
from dha_train.spaces import build_network
from dha_train.spaces.arch import architecture_from_dict
from tests.conftest import SPACE_CONFIGS as CONFIGS


def _trained(space: str):
    torch.manual_seed(0)
    from dha_train.spaces import build_supernet

    net = build_supernet(CONFIGS[space])
    search = ArchitectureSearch(net, Budget(), CostModel(net), seed=0)
    r = CONFIGS[space].resolution
    x, y = torch.rand(8, 3, r, r), torch.randint(0, 10, (8,))
    opt = torch.optim.SGD([*net.parameters(), *search.parameters()], lr=0.05)
    for _ in range(3):
        loss = F.cross_entropy(net(x, search.sample()), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net, search, x


@pytest.mark.parametrize("space", sorted(CONFIGS))
def test_child_equals_supernet_after_freezing(space: str) -> None:
    net, search, x = _trained(space)
    search.freeze_all()
    net.eval()
    arch, child = derive_child(net, search)
    assert type(child) is type(build_network(arch))
    n_child = sum(p.numel() for p in child.parameters())
    assert n_child < sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        assert torch.allclose(child(x), net(x, search.sample()), atol=1e-5, rtol=1e-5)
    assert architecture_from_dict(arch.to_dict()) == arch


def test_mobilenet_child_folds_unfrozen_alpha() -> None:
    net, search, x = _trained("mobilenet")
    net.eval()
    selection = search.sample()
    _, child = derive_child(net, search)
    assert search.num_frozen == 0  # the supernet itself was not folded
    with torch.no_grad():
        assert torch.allclose(child(x), net(x, selection), atol=1e-4, rtol=1e-4)
