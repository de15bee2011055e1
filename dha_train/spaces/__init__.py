"""Search spaces: a registry of spaces, the supernet factory and the one network builder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from dha_train.errors import ConfigError
from dha_train.spaces.arch import Architecture, CellArch, MobileNetArch
from dha_train.spaces.base import Selection, SpaceConfig, Supernet
from dha_train.spaces.cell import CellNetwork, CellSupernet, validate_cell
from dha_train.spaces.mobilenet import MobileNetNetwork, MobileNetSupernet, validate_mobilenet

__all__ = [
    "SPACES",
    "SpaceEntry",
    "Selection",
    "SpaceConfig",
    "Supernet",
    "build_supernet",
    "build_network",
    "validate_architecture",
]


@dataclass(frozen=True)
class SpaceEntry:
    """A search space: its supernet, its architecture record and the child builder."""

    supernet: Callable[[SpaceConfig], Supernet]
    record: type
    network: Callable[[Any], nn.Module]
    validate: Callable[[Any], None]


SPACES: dict[str, SpaceEntry] = {
    "mobilenet": SpaceEntry(MobileNetSupernet, MobileNetArch, MobileNetNetwork, validate_mobilenet),
    "cell": SpaceEntry(CellSupernet, CellArch, CellNetwork, validate_cell),
}


def _entry(space: str) -> SpaceEntry:
    if space not in SPACES:
        raise ConfigError(f"unknown search space {space!r}; expected one of {sorted(SPACES)}")
    return SPACES[space]


def build_supernet(cfg: SpaceConfig) -> Supernet:
    """The supernet of ``cfg.space`` (every candidate of every decision unit)."""
    return _entry(cfg.space).supernet(cfg)


def build_network(arch: Architecture) -> nn.Module:
    """The standalone network of an architecture record (derived child or published net)."""
    return _entry(arch.space).network(arch)


def validate_architecture(arch: Architecture) -> None:
    """Raise ConfigError unless ``arch`` fits its space's layout."""
    _entry(arch.space).validate(arch)
