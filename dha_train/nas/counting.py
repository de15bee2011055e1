"""Parameter and multiply-add counts, as the paper's Table 5 reports them.

FLOPs here are multiply-adds counted by fvcore (one multiply-add = one flop) with batch
norm excluded, since it folds into the preceding convolution at deployment. Operators that
fvcore cannot count are listed, never silently dropped.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["FlopCount", "count_params", "count_flops"]

log = logging.getLogger(__name__)

# Operators that carry no multiply-adds worth counting (or fold away at deployment).
_ZERO_COST_OPS = (
    "aten::batch_norm",
    "aten::add",
    "aten::add_",
    "aten::mul",
    "aten::mul_",
    "aten::hardtanh",
    "aten::hardtanh_",
    "aten::relu",
    "aten::relu_",
    "aten::hardswish",
    "aten::hardswish_",
    "aten::hardsigmoid",
    "aten::sigmoid",
    "aten::silu",
    "aten::silu_",
    "aten::max_pool2d",
    "aten::avg_pool2d",
    "aten::adaptive_avg_pool2d",
    "aten::mean",
    "aten::cat",
    "aten::flatten",
    "aten::dropout",
    "aten::sub",
    "aten::div",
    "aten::clamp",
    "aten::pad",
    "aten::constant_pad_nd",
)


@dataclass(frozen=True)
class FlopCount:
    """Multiply-adds of one forward pass at a given input shape."""

    total: int
    by_operator: dict[str, int] = field(default_factory=dict)
    unsupported: dict[str, int] = field(default_factory=dict)  # operator -> occurrences

    @property
    def mega(self) -> float:
        return self.total / 1e6


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not), as papers report them."""
    return sum(p.numel() for p in model.parameters())


def _no_cost(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
    return Counter()


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> FlopCount:
    """Multiply-adds of ``model`` on one input of ``input_shape`` (N, C, H, W), BN excluded.

    The model is traced in eval mode on its own device; its training mode is restored.
    """
    with warnings.catch_warnings():
        # importing fvcore runs torch.jit.script (a detectron2 loss), which torch deprecates
        warnings.filterwarnings("ignore", r".*torch\.jit\.script.* is deprecated", FutureWarning)
        from fvcore.nn import FlopCountAnalysis  # heavy import, only where counting happens

    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.eval()
    try:
        with warnings.catch_warnings():
            # fvcore traces with torch.jit, which torch 2.11+ deprecates
            warnings.simplefilter("ignore", FutureWarning)
            analysis = FlopCountAnalysis(model, torch.zeros(input_shape, device=device))
            # A handle returning an empty Counter drops an op; set_op_handle(op, None) does not
            # drop batch_norm on fvcore 0.1.5 (see REFERENCE-NOTES.md).
            analysis.set_op_handle(**{op: _no_cost for op in _ZERO_COST_OPS})
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            by_operator = {k: int(v) for k, v in analysis.by_operator().items() if v}
            unsupported = {k: int(v) for k, v in analysis.unsupported_ops().items()}
            total = int(analysis.total())
    finally:
        model.train(was_training)
    if unsupported:
        log.warning("fvcore could not count these operators (left out): %s", unsupported)
    return FlopCount(total=total, by_operator=by_operator, unsupported=unsupported)
