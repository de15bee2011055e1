"""MobileNet building blocks: conv-BN-act, the inverted-residual MBConv, and the residual wrapper.

The supernet and the derived child build the same blocks, so the child's weights are copied
from the supernet by module name.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["make_divisible", "conv_bn", "MBConv", "Residual"]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never more than 10% below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_bn(
    c_in: int, c_out: int, kernel: int, stride: int = 1, *, groups: int = 1, act: bool = True
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BN -> optional ReLU6."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted bottleneck: 1x1 expand (skipped when expand == 1) -> kxk depthwise -> 1x1
    project with a linear BN (the BN alpha folds into)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, expand: int, stride: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.expand = conv_bn(c_in, hidden, 1) if expand != 1 else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, kernel, stride, groups=hidden)
        self.project = conv_bn(hidden, c_out, 1, act=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.depthwise(self.expand(x)))


class Residual(nn.Module):
    """``x + body(x)`` (the child's form of a stride-1, in == out MobileNet layer)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)
