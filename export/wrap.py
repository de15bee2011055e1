"""The deployed network: ``nn.Sequential(Normalize(mean, std), child)`` on [0, 1] RGB input."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from export.errors import ExportError

__all__ = ["Normalize", "deployable"]


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` on ``(N, C, H, W)`` input; mean and std are buffers."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or len(mean) == 0:
            raise ExportError(
                f"normalisation mean {list(mean)} and std {list(std)} differ in length; "
                "expected one value per channel in each; pass the dataset bundle's mean/std"
            )
        if min(std) <= 0:
            raise ExportError(
                f"normalisation std {list(std)} has a value <= 0; expected positive values; "
                "pass the dataset bundle's std"
            )
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` channel by channel."""
        return (x - self.mean) / self.std


def deployable(child: nn.Module, mean: Sequence[float], std: Sequence[float]) -> nn.Sequential:
    """Wrap a trained child (which takes normalised input) into the deployed contract.

    The result takes float32 RGB in [0, 1] shaped ``(N, 3, R, R)`` and returns logits; it is
    a copy on CPU in eval mode, so the caller's model is left as it was.
    """
    wrapped = nn.Sequential(Normalize(mean, std), copy.deepcopy(child))
    return wrapped.cpu().eval()
