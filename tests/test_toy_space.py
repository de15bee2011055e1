"""DESIGN.md's "How to add a space", followed once: a toy space, registered by one entry,
gets CLI choices, decoding, drawing, a Table 5 letter and the parametrised space tests
without any other module being edited.

The toy: a stem, two searchable layers choosing one conv among kernels 1/3/5, a head.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn

from dha_train.errors import ConfigError
from dha_train.spaces import (
    SPACES,
    SpaceEntry,
    baseline_architecture,
    draw_architecture,
    tiny_config,
)
from dha_train.spaces.arch import SCHEMA_VERSION, architecture_from_dict, common_fields, need
from dha_train.spaces.base import Candidate, Selection, SpaceConfig, Supernet, Support
from dha_train.spaces.registry import SpaceImpl
from pipeline.params import PARAMS, add_params
from tests import test_budgets, test_derive, test_search, test_spaces

KERNELS = (1, 3, 5)
UNITS, WIDTH = 2, 8


@dataclass(frozen=True)
class ToyArch:
    num_classes: int
    resolution: int
    kernels: tuple[int, ...]
    in_channels: int = 3
    dropout: float = 0.0
    space: str = "toy"

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self), "kernels": list(self.kernels)}


def _conv(k: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(WIDTH, WIDTH, k, padding=k // 2, bias=False), nn.BatchNorm2d(WIDTH)
    )


class _Toy(nn.Module):
    def __init__(self, cfg: SpaceConfig | ToyArch, layers: nn.ModuleList) -> None:
        super().__init__()
        self.stem = nn.Conv2d(cfg.in_channels, WIDTH, 3, padding=1)
        self.layers = layers
        self.head = nn.Linear(WIDTH, cfg.num_classes)


class ToyNetwork(_Toy):
    def __init__(self, arch: ToyArch) -> None:
        super().__init__(arch, nn.ModuleList(_conv(k) for k in arch.kernels))

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.head(x.mean((2, 3)))


class ToySupernet(_Toy, Supernet):
    def __init__(self, cfg: SpaceConfig) -> None:
        layers = nn.ModuleList(nn.ModuleList(_conv(k) for k in KERNELS) for _ in range(UNITS))
        super().__init__(cfg, layers)
        self.config = cfg
        self.unit_sizes, self.unit_topk = (len(KERNELS),) * UNITS, (1,) * UNITS
        self._freeze_scale_affines()

    def forward(self, x: Tensor, selection: Selection) -> Tensor:
        x = self.stem(x)
        for unit, ops in enumerate(self.layers):
            w = selection.weight(unit)
            branches = [
                ops[c](x) * (1.0 if w is None else w[i])
                for i, c in enumerate(selection.support[unit])
            ]
            x = F.relu(sum(branches))
        return self.head(x.mean((2, 3)))

    def candidate_names(self, unit: int) -> list[str]:
        return [f"conv{k}x{k}" for k in KERNELS]

    def candidate_instances(self, unit: int, index: int) -> list[Candidate]:
        r = self.config.resolution
        return [Candidate(self.layers[unit][index], (1, WIDTH, r, r), ("toy", KERNELS[index], r))]

    def architecture(self, support: Sequence[Sequence[int]]) -> ToyArch:
        c = self.config
        kernels = tuple(KERNELS[s[0]] for s in support)
        return ToyArch(c.num_classes, c.resolution, kernels, c.in_channels, c.dropout)

    def support_of(self, arch: Any) -> Support:
        return tuple((KERNELS.index(k),) for k in arch.kernels)

    def child_state_dict(self, support: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        out = {}
        for key, value in self.state_dict().items():
            if key.startswith("layers."):
                _, unit, index, rest = key.split(".", 3)
                if int(index) == support[int(unit)][0]:
                    out[f"layers.{unit}.{rest}"] = value
            else:
                out[key] = value
        return out


def _validate(arch: ToyArch) -> None:
    if len(arch.kernels) != UNITS or not set(arch.kernels) <= set(KERNELS):
        raise ConfigError(f"toy kernels {arch.kernels}; expected {UNITS} of {KERNELS}")


def _draw(arch: ToyArch) -> Figure:
    fig = Figure()
    fig.subplots().bar(range(len(arch.kernels)), arch.kernels)
    return fig


SPACE = SpaceImpl(
    supernet=ToySupernet,
    network=ToyNetwork,
    decode=lambda d: ToyArch(kernels=tuple(need(d, "kernels", list)), **common_fields(d)),
    validate=_validate,
    baseline=lambda cfg: ToyArch(cfg.num_classes, cfg.resolution, (3,) * UNITS),
    draw=_draw,
)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> str:
    """The recipe's one step: register the entry (undone after the test)."""
    monkeypatch.setitem(SPACES, "toy", SpaceEntry("toy", "T", __name__, {"resolution": 8}))
    return "toy"


def test_cli_offers_the_new_space(toy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert PARAMS["space"].parse(toy) == toy
    parser = argparse.ArgumentParser()
    add_params(parser, ["space"])
    assert "toy" in parser.format_help()
    monkeypatch.delitem(SPACES, toy)
    with pytest.raises(ConfigError, match="unknown space 'toy'"):
        PARAMS["space"].parse(toy)


def test_records_decode_validate_and_draw(toy: str) -> None:
    arch = baseline_architecture(tiny_config(toy))
    assert architecture_from_dict(arch.to_dict()) == arch
    with pytest.raises(ConfigError, match="toy kernels"):
        architecture_from_dict({**arch.to_dict(), "kernels": [3, 4]})
    figure = draw_architecture(arch)
    assert len(figure.axes[0].patches) == UNITS
    assert SPACES[toy].letter == "T"  # Table 5's "Search Space" column


@pytest.mark.parametrize(
    "test",
    [
        test_spaces.test_only_selected_candidates_run,
        test_spaces.test_architecture_records_round_trip,
        test_spaces.test_baseline_architecture_builds,
        test_budgets.test_prediction_equals_counts_of_the_built_network,
        test_derive.test_child_equals_supernet_after_freezing,
        test_search.test_no_sampled_child_breaks_the_budget,
    ],
    ids=lambda t: t.__name__,
)
def test_parametrised_space_tests_run_on_the_new_space(toy: str, test: Any) -> None:
    torch.manual_seed(0)
    test(toy)
