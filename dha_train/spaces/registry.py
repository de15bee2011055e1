"""The search-space registry: one entry per space owns everything the code asks of it.

An entry is light (importable without torch, so ``dha --help`` lists the spaces): its name,
the paper's Table 5 letter, a test-sized configuration and the module that implements it.
That module defines ``SPACE``, a :class:`SpaceImpl` with the supernet, the child builder,
the decoder and validator of its architecture record, its baseline and its picture. Adding
a space is one :func:`register_space` call (see docs/DESIGN.md, "How to add a space").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dha_train.errors import ConfigError, check_choice
from dha_train.lazy import resolve

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import nn

    from dha_train.spaces.arch import Architecture
    from dha_train.spaces.base import SpaceConfig, Supernet

__all__ = ["SPACES", "SpaceEntry", "SpaceImpl", "register_space", "space_impl", "tiny_config"]


@dataclass(frozen=True)
class SpaceImpl:
    """What a space's module provides (its ``SPACE`` attribute)."""

    supernet: Callable[[SpaceConfig], Supernet]
    network: Callable[[Any], nn.Module]  # its architecture record -> standalone network
    decode: Callable[[dict[str, Any]], Architecture]  # JSON dict -> record (not validated)
    validate: Callable[[Any], None]  # ConfigError unless the record fits the layout
    baseline: Callable[[SpaceConfig], Architecture]  # what mode=baseline trains
    draw: Callable[[Any], Figure]  # a picture of a record


@dataclass(frozen=True)
class SpaceEntry:
    """A registered search space."""

    name: str
    letter: str  # the paper's Table 5 "Search Space" column
    module: str  # import path of the module whose ``SPACE`` implements it
    tiny: Mapping[str, Any] = field(default_factory=dict)  # SpaceConfig kwargs for tests


SPACES: dict[str, SpaceEntry] = {}


def register_space(entry: SpaceEntry) -> SpaceEntry:
    """Add ``entry`` to :data:`SPACES` (a name is registered once)."""
    if entry.name in SPACES and SPACES[entry.name] != entry:
        raise ConfigError(f"search space {entry.name!r} is already registered")
    SPACES[entry.name] = entry
    return entry


def space_impl(name: str) -> SpaceImpl:
    """The implementation of space ``name`` (imports its module on first use)."""
    check_choice(name, list(SPACES), "search space")
    impl = resolve(f"{SPACES[name].module}:SPACE")
    if not isinstance(impl, SpaceImpl):
        raise ConfigError(f"module {SPACES[name].module} defines no SpaceImpl named SPACE")
    return impl


def tiny_config(name: str, num_classes: int = 10) -> SpaceConfig:
    """A test-sized configuration of space ``name`` (its entry's ``tiny`` settings)."""
    from dha_train.spaces.base import SpaceConfig

    check_choice(name, list(SPACES), "search space")
    return SpaceConfig(name, num_classes, **SPACES[name].tiny)


# MobileNetV2-like layout of ProxylessNAS (21 searchable MBConv layers).
register_space(
    SpaceEntry(
        "mobilenet", "M", "dha_train.spaces.mobilenet", {"resolution": 32, "width_mult": 0.35}
    )
)
# DARTS layout (normal and reduction cells, 14 edges each).
register_space(
    SpaceEntry(
        "cell", "C", "dha_train.spaces.cell", {"resolution": 16, "init_channels": 8, "layers": 5}
    )
)
