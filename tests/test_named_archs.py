"""Published architectures: counts at 224 px, forward, JSON round trip (over the registry)."""

from __future__ import annotations

import pytest
import torch

from dha_train.errors import ConfigError
from dha_train.nas.counting import count_flops, count_params
from dha_train.spaces import build_network
from dha_train.spaces.arch import architecture_from_dict, load_architecture, save_architecture
from dha_train.spaces.named import NAMED_ARCHITECTURES, named_architecture

PUBLISHED = {  # name -> (params, multiply-adds) at 224 px, 1000 classes
    "proxylessnas_gpu": (7.12e6, 465e6),
    "darts_v2": (4.72e6, 530e6),
}


@pytest.mark.parametrize("name", sorted(NAMED_ARCHITECTURES))
def test_published_counts_within_one_percent(name: str) -> None:
    net = build_network(named_architecture(name))
    params, flops = PUBLISHED[name]
    assert abs(count_params(net) - params) / params < 0.01
    counted = count_flops(net, (1, 3, 224, 224))
    assert not counted.unsupported
    assert abs(counted.total - flops) / flops < 0.01


@pytest.mark.parametrize("name", sorted(NAMED_ARCHITECTURES))
def test_small_forward_and_json_round_trip(name: str, tmp_path) -> None:
    arch = named_architecture(name, num_classes=10, resolution=32)
    path = save_architecture(arch, tmp_path / "arch.json")
    again = load_architecture(path)
    assert again == arch
    net = build_network(again).eval()
    out = net(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_unknown_name_and_bad_schema_are_user_errors() -> None:
    with pytest.raises(ConfigError, match="darts_v2"):
        named_architecture("nope")
    d = named_architecture("darts_v2").to_dict()
    with pytest.raises(ConfigError, match="schema_version"):
        architecture_from_dict({**d, "schema_version": 99})
    with pytest.raises(ConfigError, match="space"):
        architecture_from_dict({**d, "space": "resnet"})
    with pytest.raises(ConfigError, match="op"):
        bad = {**d, "genotype": {**d["genotype"], "normal": [["conv_9x9", 0]] * 8}}
        architecture_from_dict(bad)
