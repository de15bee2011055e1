"""Sec. 3.1 / App. A.1: the 14 augmentation operations on batched tensors on the device.

Images are float tensors ``(B, 3, H, W)`` in ``[0, 1]``. Every sample has its own ordered pair
of operations and its own magnitudes; the pair is applied as two stages (first op of every
sample, then second op of every sample). Each stage reorders the batch so that the samples
of one operation are contiguous (one gather), runs each operation in place on its slice with
per-sample factors, and runs the geometric operations, placed last, as one batched
``grid_sample`` with per-sample matrices; one gather at the end restores the batch order.

Magnitudes are drawn uniformly from ``[0, 10]`` (paper) and mapped to each operation's range
as torchvision's ``RandAugment`` does (``_augmentation_space`` with 11 bins, read here as a
continuous line through those bins): rotate 30 deg, shear 0.3, translate 150/331 of the side,
enhance factors ``1 +- 0.9``, posterize 8 -> 4 bits, solarize threshold 1 -> 0. Signed
operations flip their sign with probability 1/2. Interpolation is nearest with zero fill,
RandAugment's defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "OPS",
    "NUM_OPS",
    "AugmentOp",
    "AUGMENT_OPS",
    "op_parameter",
    "apply_op",
    "apply_pairs",
    "sample_magnitudes",
    "standard_augment",
    "warp",
]

MAX_MAGNITUDE = 10.0
_GRAY = (0.299, 0.587, 0.114)  # PIL's "L" conversion weights


def _gray(x: Tensor) -> Tensor:
    r, g, b = x.unbind(dim=1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _blend_(x: Tensor, degenerate: Tensor, factor: Tensor) -> None:
    """PIL ``Image.blend(degenerate, x, factor)`` in place, one factor per sample."""
    weight = (1.0 - factor).view(-1, 1, 1, 1).to(x.dtype)
    x.lerp_(degenerate, weight).clamp_(0.0, 1.0)


# Pixel ops work in place on a contiguous slice of the batch: (x_group, params) -> None.
def _brightness(x: Tensor, p: Tensor) -> None:
    x.mul_(p.view(-1, 1, 1, 1).to(x.dtype)).clamp_(0.0, 1.0)  # blend with black


def _color(x: Tensor, p: Tensor) -> None:
    _blend_(x, _gray(x), p)


def _contrast(x: Tensor, p: Tensor) -> None:
    _blend_(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), p)


def _sharpness(x: Tensor, p: Tensor) -> None:
    """PIL's SMOOTH kernel (1 1 1 / 1 5 1 / 1 1 1) / 13 inside, border pixels unchanged:
    the 3x3 box sum plus 4 times the centre, over 13."""
    rows = x[..., :-2] + x[..., 1:-1] + x[..., 2:]  # sums of 3 along W (sliced adds are
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]  # faster than a conv)
    inner = x[..., 1:-1, 1:-1]
    _blend_(inner, box.add_(inner, alpha=4.0).div_(13.0), p)


def _posterize(x: Tensor, p: Tensor) -> None:
    step = torch.pow(2.0, 8.0 - p).view(-1, 1, 1, 1).to(x.dtype)
    x.mul_(255.0).round_().div_(step).floor_().mul_(step / 255.0)


def _solarize(x: Tensor, p: Tensor) -> None:
    flip = (x >= p.view(-1, 1, 1, 1).to(x.dtype)).to(x.dtype)
    x.mul_(1.0 - 2.0 * flip).add_(flip)  # 1 - x where flipped, x elsewhere


def _autocontrast(x: Tensor, p: Tensor) -> None:
    x.copy_(TF.autocontrast(x))


def _equalize(x: Tensor, p: Tensor) -> None:
    x.copy_(TF.equalize(x))


def _identity(x: Tensor, p: Tensor) -> None:
    return None


def _rotate(p: Tensor, h: int, w: int) -> Tensor:
    """Counter-clockwise rotation by ``p`` degrees about the image centre (PIL ``rotate``)."""
    r = torch.deg2rad(p)
    cos, sin = torch.cos(r), torch.sin(r)
    cx, cy = w * 0.5, h * 0.5
    row0 = torch.stack([cos, -sin, cx - cos * cx + sin * cy], dim=-1)
    row1 = torch.stack([sin, cos, cy - sin * cx - cos * cy], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def _matrix(a: Tensor, b: Tensor, c: Tensor, d: Tensor, e: Tensor, f: Tensor) -> Tensor:
    return torch.stack([torch.stack([a, b, c], -1), torch.stack([d, e, f], -1)], -2)


def _shear_x(p: Tensor, h: int, w: int) -> Tensor:
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    return _matrix(one, p, zero, zero, one, zero)


def _shear_y(p: Tensor, h: int, w: int) -> Tensor:
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    return _matrix(one, zero, zero, p, one, zero)


def _translate_x(p: Tensor, h: int, w: int) -> Tensor:
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    return _matrix(one, zero, -p, zero, one, zero)


def _translate_y(p: Tensor, h: int, w: int) -> Tensor:
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    return _matrix(one, zero, zero, zero, one, -p)


@dataclass(frozen=True)
class AugmentOp:
    """One operation: its range at magnitude 10, whether it is signed, and how it runs.

    ``pixel`` ops change ``x_group`` in place with ``(x_group, params)``; ``affine`` ops map
    ``(params, H, W) -> (n, 2, 3)`` inverse matrices from output to input pixel coordinates
    (pixel centres at ``i + 0.5``, PIL's convention).
    """

    name: str
    max_value: float
    signed: bool
    pixel: Callable[[Tensor, Tensor], None] | None = None
    affine: Callable[[Tensor, int, int], Tensor] | None = None


# Paper order (App. A.1); the index of an op in this tuple is its id in tau.
AUGMENT_OPS: dict[str, AugmentOp] = {
    op.name: op
    for op in (
        AugmentOp("AutoContrast", 0.0, False, pixel=_autocontrast),
        AugmentOp("Equalize", 0.0, False, pixel=_equalize),
        AugmentOp("Rotate", 30.0, True, affine=_rotate),
        AugmentOp("Posterize", 4.0, False, pixel=_posterize),  # bits = 8 - round(0.4 m)
        AugmentOp("Solarize", 1.0, False, pixel=_solarize),  # threshold = 1 - m / 10
        AugmentOp("Color", 0.9, True, pixel=_color),
        AugmentOp("Contrast", 0.9, True, pixel=_contrast),
        AugmentOp("Brightness", 0.9, True, pixel=_brightness),
        AugmentOp("Sharpness", 0.9, True, pixel=_sharpness),
        AugmentOp("ShearX", 0.3, True, affine=_shear_x),
        AugmentOp("ShearY", 0.3, True, affine=_shear_y),
        AugmentOp("TranslateX", 150.0 / 331.0, True, affine=_translate_x),
        AugmentOp("TranslateY", 150.0 / 331.0, True, affine=_translate_y),
        AugmentOp("Identity", 0.0, False, pixel=_identity),
    )
}
OPS: tuple[str, ...] = tuple(AUGMENT_OPS)
NUM_OPS = len(OPS)
_ENHANCE = {"Color", "Contrast", "Brightness", "Sharpness"}


def op_parameter(name: str, magnitude: Tensor, sign: Tensor, size: tuple[int, int]) -> Tensor:
    """Map magnitudes in ``[0, 10]`` to the op's parameter in torchvision's convention.

    Enhance ops return the blend factor ``1 + v``; translations whole pixels (truncated,
    as RandAugment's ``int(magnitude)``); posterize the number of bits kept; solarize the
    threshold in ``[0, 1]``.
    """
    op = AUGMENT_OPS[name]
    v = magnitude / MAX_MAGNITUDE * op.max_value
    if op.signed:
        v = v * sign
    if name == "Posterize":
        return 8.0 - torch.round(v)
    if name == "Solarize":
        return 1.0 - v
    if name in _ENHANCE:
        return 1.0 + v
    if name == "TranslateX":
        return torch.trunc(v * size[1])
    if name == "TranslateY":
        return torch.trunc(v * size[0])
    return v


def warp(x: Tensor, inverse: Tensor) -> Tensor:
    """Apply per-sample inverse pixel matrices ``(B, 2, 3)``: nearest, zero fill."""
    b, _, h, w = x.shape
    to_norm = torch.tensor([[2.0 / w, 0.0, -1.0], [0.0, 2.0 / h, -1.0], [0.0, 0.0, 1.0]])
    to_norm = to_norm.to(device=x.device, dtype=inverse.dtype)
    from_norm = torch.linalg.inv(to_norm)
    full = torch.cat([inverse, to_norm[2:].expand(b, 1, 3)], dim=1)
    theta = (to_norm @ full @ from_norm)[:, :2]
    grid = F.affine_grid(theta.to(x.dtype), [b, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


# Stage order: pixel ops first, then the geometric ones as one contiguous block.
_STAGE_ORDER: tuple[int, ...] = tuple(
    sorted(range(NUM_OPS), key=lambda k: AUGMENT_OPS[OPS[k]].affine is not None)
)
_RANK = torch.tensor([_STAGE_ORDER.index(k) for k in range(NUM_OPS)])


def _apply_sorted(x: Tensor, op_ids: Tensor, magnitudes: Tensor, signs: Tensor) -> None:
    """One stage in place on a batch already sorted by ``_RANK[op_ids]``."""
    h, w = x.shape[-2:]
    counts = torch.bincount(op_ids, minlength=NUM_OPS).tolist()
    start, affine_start, mats = 0, None, []
    for k in _STAGE_ORDER:
        if counts[k] == 0:
            continue
        group = slice(start, start + counts[k])
        start += counts[k]
        op = AUGMENT_OPS[OPS[k]]
        param = op_parameter(op.name, magnitudes[group], signs[group], (h, w))
        if op.affine is not None:
            affine_start = group.start if affine_start is None else affine_start
            mats.append(op.affine(param, h, w))
        elif op.pixel is not None:
            op.pixel(x[group], param)
    if affine_start is not None:
        x[affine_start:].copy_(warp(x[affine_start:], torch.cat(mats)))


def apply_pairs(x: Tensor, pairs: Tensor, magnitudes: Tensor, signs: Tensor) -> Tensor:
    """Apply each sample's ordered ops ``pairs[i] = (first, second)`` (all ``(B, stages)``).

    Returns a new tensor in ``x``'s sample order; ``x`` is not modified.
    """
    rows = torch.arange(x.shape[0], device=x.device)  # rows[j]: the sample held in row j
    for stage in range(pairs.shape[1]):
        order = torch.argsort(_RANK.to(pairs.device)[pairs[rows, stage]], stable=True)
        rows = rows[order]
        x = x.index_select(0, order)  # a new tensor, changed in place below
        _apply_sorted(x, pairs[rows, stage], magnitudes[rows, stage], signs[rows, stage])
    return x.index_select(0, torch.argsort(rows))


def apply_op(x: Tensor, op_ids: Tensor, magnitudes: Tensor, signs: Tensor) -> Tensor:
    """One stage: sample ``i`` gets op ``OPS[op_ids[i]]`` with its own magnitude and sign."""
    return apply_pairs(x, op_ids[:, None], magnitudes[:, None], signs[:, None])


def sample_magnitudes(
    batch: int, generator: torch.Generator, *, ops_per_sample: int = 2
) -> tuple[Tensor, Tensor]:
    """Magnitudes ``U[0, 10]`` and random signs (+-1), one per op of each sample."""
    dev = generator.device
    mags = torch.rand(batch, ops_per_sample, generator=generator, device=dev) * MAX_MAGNITUDE
    signs = torch.randint(0, 2, (batch, ops_per_sample), generator=generator, device=dev)
    return mags, signs.float() * 2.0 - 1.0


def standard_augment(
    x: Tensor, generator: torch.Generator, *, pad: int | None = None, flip: bool = True
) -> Tensor:
    """The fixed baseline augmentation: random crop with zero padding and horizontal flip.

    A crop of a zero-padded image is an integer translation with zero fill, so both run as
    one nearest-neighbour warp. ``pad`` defaults to ``side / 8`` (4 px at 32 px).
    """
    b, _, h, w = x.shape
    pad = max(1, w // 8) if pad is None else pad
    dev = generator.device
    shift = torch.randint(-pad, pad + 1, (b, 2), generator=generator, device=dev).float()
    mirror = torch.ones(b, device=dev)
    if flip:
        mirror = torch.randint(0, 2, (b,), generator=generator, device=dev).float() * -2.0 + 1.0
    zero = torch.zeros(b, device=dev)
    # u = mirror * (x - w/2) + w/2 - dx ; v = y - dy
    mats = _matrix(
        mirror,
        zero,
        (1.0 - mirror) * w * 0.5 - shift[:, 0],
        zero,
        torch.ones_like(zero),
        -shift[:, 1],
    )
    return warp(x, mats.to(x.device))
