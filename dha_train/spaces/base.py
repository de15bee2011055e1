"""The contract between a search space, the architecture search and the trainer.

A *decision unit* is one place where the search picks operations: a MobileNet layer
(pick 1 of its candidates) or a cell node (pick 2 of its incoming edge-operations).
The supernet holds every candidate; a :class:`Selection` says which run in this step
and with which weights (alpha restricted to its support, Eq. 7).

Scale folding (ISTA-NAS): every candidate's last batch norm (``scale_bn``) keeps its affine
frozen at (1, 0) (``requires_grad=False``) while its unit is searched, since alpha already
scales the candidate; when the unit freezes, alpha is multiplied into that affine and the
affine becomes trainable. Build optimizers over *all* ``parameters()``: the frozen affines
get no gradient until their unit freezes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from dha_train.spaces.arch import Architecture

__all__ = ["SpaceConfig", "Selection", "Supernet", "Candidate", "Support", "scale_bn"]

Support = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class SpaceConfig:
    """Everything needed to build a supernet (and, with an architecture, its child)."""

    space: str  # "mobilenet" | "cell"
    num_classes: int
    resolution: int  # input side in pixels; >= 160 selects the ImageNet stem
    in_channels: int = 3
    width_mult: float = 1.0  # mobilenet space
    init_channels: int = 16  # cell space: C
    layers: int = 8  # cell space: number of cells
    dropout: float = 0.0

    @property
    def imagenet_stem(self) -> bool:
        """ImageNet stem (more stride-2 steps) for large inputs, a small-image stem otherwise."""
        return self.resolution >= 160


@dataclass
class Selection:
    """Which candidates run in each decision unit in this step, and their weights.

    ``support[u]`` holds the indices (into the unit's candidate list) of the operations that
    run; ``weights[u]`` holds alpha on that support (a tensor of the same length, differentiable
    w.r.t. the compressed variable b through Eq. 7). ``weights is None`` means unscaled: the
    unit's scale was folded into the operations' weights (a frozen unit, or a derived child).
    """

    support: tuple[tuple[int, ...], ...]
    weights: list[Tensor | None] | None = None

    def weight(self, unit: int) -> Tensor | None:
        return None if self.weights is None else self.weights[unit]


@dataclass(frozen=True)
class Candidate:
    """One instance of a candidate operation, for the cost model.

    ``key`` identifies the operation and its shapes (equal keys cost the same), ``input_shape``
    is its real input at batch 1. A shared cell unit has one instance per cell of its type.
    """

    module: nn.Module
    input_shape: tuple[int, ...]
    key: Hashable


def scale_bn(module: nn.Module) -> nn.BatchNorm2d | None:
    """The batch norm that ends ``module`` (where alpha folds), or None (pools, identity)."""
    last = None
    for sub in module.modules():
        if isinstance(sub, nn.BatchNorm2d):
            last = sub
    return last


class Supernet(nn.Module, ABC):
    """Abstract base of the search spaces' supernets. Subclasses set the unit tables and
    implement the abstract methods."""

    config: SpaceConfig
    unit_sizes: tuple[int, ...]  # number of candidates per decision unit (n in Eq. 5)
    unit_topk: tuple[int, ...]  # support size per unit (1 per MobileNet layer, 2 per cell node)

    @abstractmethod
    def forward(self, x: Tensor, selection: Selection) -> Tensor:
        """Logits of the child that ``selection`` picks (its weights scale the branches)."""

    @abstractmethod
    def candidate_names(self, unit: int) -> list[str]:
        """Human-readable names of a unit's candidates (for plots and logs)."""

    @abstractmethod
    def candidate_instances(self, unit: int, index: int) -> list[Candidate]:
        """Every module instance of candidate ``index`` of ``unit`` (empty for a zero branch)."""

    @abstractmethod
    def architecture(self, support: Sequence[Sequence[int]]) -> Architecture:
        """The architecture record (``spaces.arch``) that ``support`` selects."""

    @abstractmethod
    def support_of(self, arch: Architecture) -> Support:
        """Inverse of :meth:`architecture` for a record of this supernet's configuration."""

    @abstractmethod
    def child_state_dict(self, support: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        """State dict of ``build_network(self.architecture(support))`` with this supernet's
        weights (scales as they are now: fold first)."""

    def num_units(self) -> int:
        return len(self.unit_sizes)

    def _freeze_scale_affines(self) -> None:
        """Freeze every candidate's ``scale_bn`` affine at (1, 0) (ISTA-NAS); call in __init__."""
        for unit in range(self.num_units()):
            self.set_scale_affine_trainable(unit, range(self.unit_sizes[unit]), False)

    def set_scale_affine_trainable(self, unit: int, indices: Sequence[int], flag: bool) -> None:
        """Let (or stop) the scale batch norms of ``indices`` in ``unit`` train."""
        for index in indices:
            for inst in self.candidate_instances(unit, index):
                bn = scale_bn(inst.module)
                if bn is not None:
                    bn.weight.requires_grad_(flag)
                    bn.bias.requires_grad_(flag)

    @torch.no_grad()
    def fold_unit_scale(self, unit: int, weights: Tensor) -> None:
        """Fold alpha of a frozen unit into its operations' weights (BN affine).

        ``weights`` is the unit's dense alpha (length ``unit_sizes[unit]``, zero off the
        support). Candidates with a non-zero weight get gamma and beta multiplied by it and a
        trainable affine. Parameter-free candidates (pools, identity) have nothing to fold
        into: their scale is dropped here (a deviation from an exact reparameterisation, see
        README), so the supernet and the derived child agree from this point on.
        """
        dense = weights.detach().flatten().tolist()
        for index, w in enumerate(dense):
            if w == 0.0:
                continue
            for inst in self.candidate_instances(unit, index):
                bn = scale_bn(inst.module)
                if bn is not None:
                    bn.weight.mul_(w)
                    bn.bias.mul_(w)
            self.set_scale_affine_trainable(unit, [index], True)
