"""The cell space's operations table (DARTS style, the paper's 7 operations, no 'none').

Every entry has the same factory signature ``(C, stride)``; the supernet and the derived
child network build their edges from this one table. Pools carry no batch norm here (unlike
DARTS' search model), so a derived child has exactly the published layout.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["OPS", "primitives", "ReLUConvBN", "FactorizedReduce", "SepConv", "DilConv"]


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


class DilConv(nn.Sequential):
    """ReLU -> dilated depthwise kxk -> pointwise 1x1 -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dilation: int) -> None:
        padding = dilation * (kernel - 1) // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )


class SepConv(nn.Sequential):
    """Two stacked (ReLU -> depthwise kxk -> pointwise 1x1 -> BN); only the first strides."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, 1),
            DilConv(c_in, c_out, kernel, 1, 1),
        )


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convs, concatenated, then BN."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        # The offset branch pads odd sides so both halves have the same size.
        shifted = nn.functional.pad(x[:, :, 1:, 1:], (0, x.shape[3] % 2, 0, x.shape[2] % 2))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def _skip(c: int, stride: int) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(c, c)


OPS: dict[str, Callable[[int, int], nn.Module]] = {
    "sep_conv_3x3": lambda c, stride: SepConv(c, c, 3, stride),
    "sep_conv_5x5": lambda c, stride: SepConv(c, c, 5, stride),
    "dil_conv_3x3": lambda c, stride: DilConv(c, c, 3, stride, 2),
    "dil_conv_5x5": lambda c, stride: DilConv(c, c, 5, stride, 2),
    "max_pool_3x3": lambda c, stride: nn.MaxPool2d(3, stride, padding=1),
    "avg_pool_3x3": lambda c, stride: nn.AvgPool2d(3, stride, padding=1, count_include_pad=False),
    "skip_connect": _skip,
}


def primitives() -> tuple[str, ...]:
    """The candidate operations of every cell edge, in table order (read from :data:`OPS`
    when a supernet is built, so an entry added to the table is a candidate)."""
    return tuple(OPS)
