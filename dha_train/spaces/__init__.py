"""Search spaces: the registry (:mod:`dha_train.spaces.registry`) and the functions the rest
of the code calls, each dispatching to the record's or configuration's space.

Importing this package is light (no torch): a space's module is imported when it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dha_train.spaces.registry import SPACES, SpaceEntry, register_space, space_impl, tiny_config

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import nn

    from dha_train.spaces.arch import Architecture
    from dha_train.spaces.base import SpaceConfig, Supernet

__all__ = [
    "SPACES",
    "SpaceEntry",
    "register_space",
    "tiny_config",
    "build_supernet",
    "build_network",
    "validate_architecture",
    "baseline_architecture",
    "draw_architecture",
]


def build_supernet(cfg: SpaceConfig) -> Supernet:
    """The supernet of ``cfg.space`` (every candidate of every decision unit)."""
    return space_impl(cfg.space).supernet(cfg)


def build_network(arch: Architecture) -> nn.Module:
    """The standalone network of an architecture record (derived child or published net)."""
    return space_impl(arch.space).network(arch)


def validate_architecture(arch: Architecture) -> None:
    """Raise ConfigError unless ``arch`` fits its space's layout."""
    space_impl(arch.space).validate(arch)


def baseline_architecture(cfg: SpaceConfig) -> Architecture:
    """The fixed architecture trained by ``mode=baseline`` (no search) for ``cfg``'s space."""
    return space_impl(cfg.space).baseline(cfg)


def draw_architecture(arch: Architecture) -> Figure:
    """A matplotlib figure of ``arch`` (its space's picture)."""
    return space_impl(arch.space).draw(arch)
