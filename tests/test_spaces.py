"""Supernets: only the selected candidates run; supports round-trip through records and JSON."""

from __future__ import annotations

import random

import pytest
import torch

from dha_train.errors import ConfigError
from dha_train.spaces import baseline_architecture, build_network, build_supernet
from dha_train.spaces.arch import architecture_from_dict
from dha_train.spaces.base import Selection, SpaceConfig
from tests.conftest import SPACE_CONFIGS as CONFIGS


def random_support(net, rng: random.Random):
    return tuple(
        tuple(rng.sample(range(n), k)) for n, k in zip(net.unit_sizes, net.unit_topk, strict=True)
    )


@pytest.mark.parametrize("space", sorted(CONFIGS))
def test_only_selected_candidates_run(space: str) -> None:
    net = build_supernet(CONFIGS[space])
    calls: dict[int, int] = {}
    for unit in range(net.num_units()):
        for c in range(net.unit_sizes[unit]):
            for inst in net.candidate_instances(unit, c):
                inst.module.register_forward_hook(
                    lambda m, i, o, key=(unit, c): calls.__setitem__(key, calls.get(key, 0) + 1)
                )
    support = random_support(net, random.Random(0))
    weights = [torch.full((k,), 0.5, requires_grad=True) for k in net.unit_topk]
    r = CONFIGS[space].resolution
    out = net(torch.rand(2, 3, r, r), Selection(support, weights))
    out.sum().backward()
    expected = {
        (u, c): len(net.candidate_instances(u, c)) for u, s in enumerate(support) for c in s
        if net.candidate_instances(u, c)
    }  # fmt: skip
    assert calls == expected
    for u, s in enumerate(support):  # alpha reaches every unit whose choice has weights
        has_ops = any(net.candidate_instances(u, c) for c in s)
        assert (weights[u].grad is not None) == has_ops


@pytest.mark.parametrize("space", sorted(CONFIGS))
def test_architecture_records_round_trip(space: str) -> None:
    net = build_supernet(CONFIGS[space])
    rng = random.Random(1)
    for _ in range(5):
        support = random_support(net, rng)
        arch = net.architecture(support)
        again = architecture_from_dict(arch.to_dict())
        assert again == arch
        assert [set(s) for s in net.support_of(again)] == [set(s) for s in support]
        child = build_network(again)
        assert child(
            torch.rand(1, 3, CONFIGS[space].resolution, CONFIGS[space].resolution)
        ).shape == (1, 10)


@pytest.mark.parametrize("space", sorted(CONFIGS))
def test_baseline_architecture_builds(space: str) -> None:
    arch = baseline_architecture(CONFIGS[space])
    assert arch.space == space
    build_network(arch)


def test_unknown_space_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="cell"):
        build_supernet(SpaceConfig("resnet", 10, 32))


def test_small_and_imagenet_stems() -> None:
    small = build_supernet(SpaceConfig("mobilenet", 10, 32, width_mult=0.35))
    large = build_supernet(SpaceConfig("mobilenet", 10, 160, width_mult=0.35))
    assert small.stem[0].stride == (1, 1) and large.stem[0].stride == (2, 2)
    assert set(small.unit_sizes) == {6, 7} and len(small.unit_sizes) == 21
