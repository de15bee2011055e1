"""Sec. 3.1 / App. A.1: the 14 augmentation operations as a table, on batched uint8 tensors.

Each :class:`AugmentOp` (range at magnitude 10, signed or not, and its kernel: a lookup-table
builder for point ops or an in-place pixel op) is one entry of :data:`AUGMENT_OPS`, in the
paper's order (an op's index is its id in tau). Magnitudes in ``[0, 10]`` map to each op's
parameter as torchvision's ``RandAugment`` does (``_augmentation_space`` with 11 bins, read
as a continuous line through them): rotate 30 deg, shear 0.3, translate 150/331 of the side,
enhance factors ``1 +- 0.9``, posterize 8 -> 4 bits, solarize threshold 1 -> 0. Geometric ops
are nearest-neighbour warps with zero fill (:func:`warp`); each op truncates its result to
8 bits, as PIL does. :mod:`dha_train.da.augment` applies them to a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MAX_MAGNITUDE",
    "OPS",
    "NUM_OPS",
    "AugmentOp",
    "AUGMENT_OPS",
    "affine_matrix",
    "op_parameter",
    "op_parameters",
    "warp",
]

MAX_MAGNITUDE = 10.0
_GRAY = (0.299, 0.587, 0.114)  # PIL's "L" conversion weights


_CONSTANTS: dict[str, Callable[[torch.device], Tensor]] = {
    "levels": lambda d: torch.arange(256, device=d, dtype=torch.float32).view(1, 1, 256),
    "gray": lambda d: torch.tensor(_GRAY, device=d),
    "columns": lambda d: _COLUMNS.to(d),  # op_parameters' table, defined below
}


@cache
def _constant(device: torch.device, name: str) -> Tensor:
    """The constant ``name`` of :data:`_CONSTANTS` on ``device``, made once (an op would
    otherwise spend longer building it than using it): read-only, shared by every call."""
    return _CONSTANTS[name](device)


def _levels(x: Tensor) -> Tensor:
    """The 256 input levels as float ``(1, 1, 256)`` on ``x``'s device (read-only)."""
    return _constant(x.device, "levels")


# Table ops: (x_group uint8 (n, C, H, W), params (n,)) -> output level per input level,
# float (n, 1 or C, 256); x_group is only read.
def _brightness(x: Tensor, p: Tensor) -> Tensor:
    return _levels(x) * p.view(-1, 1, 1)  # blend with black


def _contrast(x: Tensor, p: Tensor) -> Tensor:
    """Blend with the mean of the gray image: a mean of channel means."""
    means = x.sum(dim=(2, 3), dtype=torch.float32) / (x.shape[2] * x.shape[3])
    gray = means @ _constant(x.device, "gray")
    return torch.lerp(gray.view(-1, 1, 1), _levels(x), p.view(-1, 1, 1))


def _autocontrast(x: Tensor, p: Tensor) -> Tensor:
    """Stretch each channel's [min, max] onto [0, 255]; a flat channel stays as it is."""
    lo, hi = (t.float().unsqueeze(-1) for t in (x.amin(dim=(2, 3)), x.amax(dim=(2, 3))))
    v = _levels(x)
    return torch.where(hi > lo, (v - lo) * (255.0 / (hi - lo).clamp_(min=1.0)), v)


def _histograms(planes: Tensor, large: int = 1 << 14) -> Tensor:
    """256-bin histograms of uint8 planes ``(m, P)``: on the CPU, large planes one
    ``bincount`` each (on uint8, so no wider copy); small ones, and every plane on a GPU
    (where each ``bincount`` waits for the host), all in one, offset to their own bins."""
    if planes.shape[1] >= large and planes.device.type == "cpu":
        return torch.stack([torch.bincount(q, minlength=256) for q in planes])
    offsets = torch.arange(planes.shape[0], device=planes.device, dtype=torch.int32) * 256
    flat = (planes.int() + offsets.unsqueeze(1)).view(-1)
    return torch.bincount(flat, minlength=planes.shape[0] * 256).view(-1, 256)


def _equalize(x: Tensor, p: Tensor) -> Tensor:
    """PIL's ``ImageOps.equalize`` per channel: ``lut[k] = (cum[k - 1] + step // 2) // step``
    with ``step`` = (pixels - pixels at the largest value present) // 255; identity if 0.
    ``cum[k - 1]`` is the exclusive cumulative sum ``cum[k] - hist[k]`` (0 at k = 0)."""
    hist = _histograms(x.flatten(0, 1).flatten(1)).view(*x.shape[:2], 256)
    cum = hist.cumsum(dim=-1)
    top = hist.gather(-1, cum.argmax(dim=-1, keepdim=True))  # first k where cum is full
    step = (cum[..., -1:] - top) // 255
    lut = (cum - hist + step // 2) // step.clamp(min=1)
    return torch.where(step > 0, lut.float(), _levels(x))


# Pixel ops work in place on a uint8 slice: (x_group, params) -> None.
def _posterize(x: Tensor, p: Tensor) -> None:
    """Keep the top ``p`` bits: one AND with a per-sample mask."""
    mask = (256.0 - torch.pow(2.0, 8.0 - p)).to(torch.uint8)
    x.bitwise_and_(mask.view(-1, 1, 1, 1))


def _solarize(x: Tensor, p: Tensor) -> None:
    """Invert levels >= ``255 p``: 255 - v is v XOR 255."""
    threshold = torch.ceil(p * 255.0).to(torch.uint8).view(-1, 1, 1, 1)
    # uint8 comparisons against a broadcast (or a scalar) are 4x slower here than against a
    # tensor of the same shape, even counting the copy
    above = x.ge(threshold.expand_as(x).contiguous())
    x.bitwise_xor_(above.view(torch.uint8).neg_())  # 0 or 255


def _blend_(x: Tensor, degenerate: Tensor, factor: Tensor) -> None:
    """PIL ``Image.blend(degenerate, x, factor)`` in place on float levels, one factor each."""
    x.lerp_(degenerate, (1.0 - factor).view(-1, 1, 1, 1)).clamp_(0.0, 255.0)


def _in_float(blend_: Callable[[Tensor, Tensor], None]) -> Callable[[Tensor, Tensor], None]:
    """A pixel op from one that changes float levels in place: a few samples at a time (they
    stay in cache), truncated back to 8 bits as PIL does."""

    def run(x: Tensor, p: Tensor, chunk: int = 1 << 18) -> None:
        step = max(1, chunk // x[0].numel())
        for i in range(0, x.shape[0], step):
            f = x[i : i + step].float()
            blend_(f, p[i : i + step])
            x[i : i + step].copy_(f)

    return run


def _color(f: Tensor, p: Tensor) -> None:
    r, g, b = f.unbind(dim=1)
    _blend_(f, (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1), p)


def _sharpness(f: Tensor, p: Tensor) -> None:
    """PIL's SMOOTH kernel (1 1 1 / 1 5 1 / 1 1 1) / 13 inside, border pixels unchanged:
    the 3x3 box sum plus 4 times the centre, over 13."""
    rows = f[..., :-2] + f[..., 1:-1] + f[..., 2:]  # sums of 3 along W (sliced adds are
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]  # faster than a conv)
    inner = f[..., 1:-1, 1:-1]
    _blend_(inner, box.add_(inner, alpha=4.0).div_(13.0), p)


def _rotation(p: Tensor, h: int, w: int) -> Tensor:
    """Inverse matrices of counter-clockwise rotations by ``p`` degrees about the centre."""
    r = torch.deg2rad(p)
    cos, sin = torch.cos(r), torch.sin(r)
    cx, cy = w * 0.5, h * 0.5
    row0 = torch.stack([cos, -sin, cx - cos * cx + sin * cy], dim=-1)
    row1 = torch.stack([sin, cos, cy - sin * cx - cos * cy], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def _border(x: Tensor, shift: Tensor, size: int) -> tuple[int, Tensor]:
    """Zero border wide enough for every shift (a shift of ``size`` or more leaves zeros
    only) and the shifts clamped to it."""
    k = min(size, int(shift.abs().max()))
    return k, shift.clamp(-k, k).add_(k).long()


def _copy_windows_(x: Tensor, padded: Tensor, starts: Tensor) -> None:
    """In place: row ``i`` of ``x`` seen as ``(starts.numel(), L)`` becomes the ``L`` elements
    of ``padded`` (flattened) from ``starts[i]`` on: one ``index_select`` of whole rows from
    overlapping windows, no index per pixel."""
    flat = padded.reshape(-1)
    length = x.numel() // starts.numel()
    windows = flat.as_strided((flat.numel() - length + 1, length), (1, 1))
    torch.index_select(windows, 0, starts.reshape(-1), out=x.view(-1, length))


def _shift_rows_(x: Tensor, shift: Tensor) -> None:
    """In place: ``out[v, u] = x[v, u + shift[v]]``, zero outside (``shift`` (n, H), or
    (n, 1) for every row alike): each output row is a window of its row padded by k zeros."""
    n, c, h, w = x.shape
    k, start = _border(x, shift, w)
    rows = torch.arange(n * c * h, device=x.device).view(n, c, h) * (w + 2 * k)
    _copy_windows_(x, F.pad(x, (k, k)), rows + start.expand(n, h).unsqueeze(1))


def _shift_planes_(x: Tensor, shift: Tensor) -> None:
    """In place: ``out[v, u] = x[v + shift, u]``, zero outside (``shift`` (n,)): each output
    plane is a window of its plane padded by k zero rows."""
    n, c, h, w = x.shape
    k, start = _border(x, shift, h)
    planes = torch.arange(n * c, device=x.device).view(n, c) * ((h + 2 * k) * w)
    _copy_windows_(x, F.pad(x, (0, 0, k, k)), planes + start.view(n, 1) * w)


def _shift_columns_(x: Tensor, shift: Tensor) -> None:
    """In place: ``out[v, u] = x[v + shift[u], u]``, zero outside (``shift`` (n, W)): a row
    of the image padded by k zero rows, read at ``u + (shift[u] + k) w``, for every v."""
    n, c, h, w = x.shape
    k, start = _border(x, shift, h)
    padded = F.pad(x, (0, 0, k, k))
    rows = padded.as_strided((n, c, h, (2 * k + 1) * w), (*padded.stride()[:2], w, 1))
    index = torch.arange(w, device=x.device) + start * w
    torch.gather(rows, 3, index.view(n, 1, 1, w).expand(n, c, h, w), out=x)


def _rotate(x: Tensor, p: Tensor) -> None:
    """Counter-clockwise by ``p`` degrees about the image centre (PIL ``rotate``)."""
    x.copy_(warp(x, _rotation(p, x.shape[2], x.shape[3])))


# Shears and translations move whole rows or columns by whole pixels: PIL's nearest source
# of output pixel (u, v) is floor(u + .5 + p (v + .5)) for ShearX, u - p for TranslateX.
def _sheared(p: Tensor, size: int) -> Tensor:  # floor(.5 + p (i + .5)) for i < size
    return torch.floor(0.5 + p.view(-1, 1) * (torch.arange(size, device=p.device) + 0.5))


def _shear_x(x: Tensor, p: Tensor) -> None:
    _shift_rows_(x, _sheared(p, x.shape[2]))


def _shear_y(x: Tensor, p: Tensor) -> None:
    _shift_columns_(x, _sheared(p, x.shape[3]))


def _translate_x(x: Tensor, p: Tensor) -> None:
    _shift_rows_(x, -p.view(-1, 1))


def _translate_y(x: Tensor, p: Tensor) -> None:
    _shift_planes_(x, -p)


def affine_matrix(a: Tensor, b: Tensor, c: Tensor, d: Tensor, e: Tensor, f: Tensor) -> Tensor:
    """Batched 2x3 pixel matrices ``[[a, b, c], [d, e, f]]`` (the form :func:`warp` takes)."""
    return torch.stack([torch.stack([a, b, c], -1), torch.stack([d, e, f], -1)], -2)


def _moving(entry: str, sign: float = 1.0) -> Callable[[Tensor, int, int], Tensor]:
    """The ``matrix`` of a shear (``entry`` b or d of :func:`affine_matrix`) or translation
    (c or f): the identity with that entry set to ``sign * p``, the same source pixels as the
    row and column shifts above."""

    def matrix(p: Tensor, h: int, w: int) -> Tensor:
        one, zero = torch.ones_like(p), torch.zeros_like(p)
        entries = dict(a=one, b=zero, c=zero, d=zero, e=one, f=zero)
        entries[entry] = p * sign
        return affine_matrix(**entries)

    return matrix


@dataclass(frozen=True)
class AugmentOp:
    """One operation: its range at magnitude 10, whether it is signed, and how it runs:
    ``table`` maps ``(x_group, params)`` to lookup tables ``(n, 1 or C, 256)`` of float levels,
    ``pixel`` changes the uint8 ``x_group`` in place; Identity has neither. Geometric ops take
    output pixel centres at ``i + 0.5``, PIL's convention, and also give their inverse pixel
    matrices: ``matrix`` maps ``(params, H, W)`` to ``(n, 2, 3)``, so that several of them can
    run as one :func:`warp` (``pixel`` is the same op, faster on large images)."""

    name: str
    max_value: float
    signed: bool
    table: Callable[[Tensor, Tensor], Tensor] | None = None
    pixel: Callable[[Tensor, Tensor], None] | None = None
    matrix: Callable[[Tensor, int, int], Tensor] | None = None


# Paper order (App. A.1); the index of an op in this tuple is its id in tau.
AUGMENT_OPS: dict[str, AugmentOp] = {
    op.name: op
    for op in (
        AugmentOp("AutoContrast", 0.0, False, table=_autocontrast),
        AugmentOp("Equalize", 0.0, False, table=_equalize),
        AugmentOp("Rotate", 30.0, True, pixel=_rotate, matrix=_rotation),
        AugmentOp("Posterize", 4.0, False, pixel=_posterize),  # bits = 8 - round(0.4 m)
        AugmentOp("Solarize", 1.0, False, pixel=_solarize),  # threshold = 1 - m / 10
        AugmentOp("Color", 0.9, True, pixel=_in_float(_color)),
        AugmentOp("Contrast", 0.9, True, table=_contrast),
        AugmentOp("Brightness", 0.9, True, table=_brightness),
        AugmentOp("Sharpness", 0.9, True, pixel=_in_float(_sharpness)),
        AugmentOp("ShearX", 0.3, True, pixel=_shear_x, matrix=_moving("b")),
        AugmentOp("ShearY", 0.3, True, pixel=_shear_y, matrix=_moving("d")),
        AugmentOp("TranslateX", 150 / 331, True, pixel=_translate_x, matrix=_moving("c", -1.0)),
        AugmentOp("TranslateY", 150 / 331, True, pixel=_translate_y, matrix=_moving("f", -1.0)),
        AugmentOp("Identity", 0.0, False),
    )
}
OPS: tuple[str, ...] = tuple(AUGMENT_OPS)
NUM_OPS = len(OPS)
_ENHANCE = {"Color", "Contrast", "Brightness", "Sharpness"}


# The parameter of each op as data: v = magnitude / 10 * max_value (times the sign where
# signed), times the image side for translations (whole pixels), then base + slope * v.
_PARAMETER_MAP = {  # name: (base, slope, "round" / "trunc" / None)
    "Posterize": (8.0, -1.0, "round"),  # bits kept
    "Solarize": (1.0, -1.0, None),  # threshold in [0, 1]
    **{name: (1.0, 1.0, None) for name in _ENHANCE},  # blend factor
    "TranslateX": (0.0, 1.0, "trunc"),  # RandAugment's int(magnitude)
    "TranslateY": (0.0, 1.0, "trunc"),
}


def _columns(name: str, op: AugmentOp) -> list[float]:
    base, slope, q = _PARAMETER_MAP.get(name, (0.0, 1.0, None))
    return [op.max_value / MAX_MAGNITUDE, op.signed, base, slope, q == "round", q == "trunc"]


_COLUMNS = torch.tensor([_columns(name, op) for name, op in AUGMENT_OPS.items()])
_SIDE = {"TranslateX": -1, "TranslateY": -2}  # the side a translation is a fraction of


def op_parameters(
    op_ids: Tensor, magnitudes: Tensor, signs: Tensor, size: tuple[int, int]
) -> Tensor:
    """Map magnitudes in ``[0, 10]`` to each sample's op parameter (torchvision's convention):
    enhance ops the blend factor ``1 + v``; translations whole pixels; posterize the number of
    bits kept; solarize the threshold in ``[0, 1]``. Elementwise: one call for a whole batch
    of pairs."""
    columns = _constant(magnitudes.device, "columns")[op_ids]
    scale, signed, base, slope, rounds, truncs = columns.unbind(-1)
    v = magnitudes * scale * torch.where(signed > 0, signs, torch.ones_like(signs))
    for name, dim in _SIDE.items():
        v = torch.where(op_ids == OPS.index(name), v * size[dim], v)
    v = torch.where(rounds > 0, torch.round(v), torch.where(truncs > 0, torch.trunc(v), v))
    return base + slope * v


def op_parameter(name: str, magnitude: Tensor, sign: Tensor, size: tuple[int, int]) -> Tensor:
    """:func:`op_parameters` for samples that all have op ``name``."""
    ids = torch.full(magnitude.shape, OPS.index(name), device=magnitude.device)
    return op_parameters(ids, magnitude, sign, size)


@lru_cache(maxsize=64)
def _pixel_centres(device: torch.device, h: int, w: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`warp`'s read-only grid: pixel centres ``(W,)`` and ``(H, 1)``, and the upper
    clamp of each axis's source index ``(1, 2, 1, 1)``."""
    xs = torch.arange(w, device=device, dtype=torch.float32) + 0.5
    ys = torch.arange(h, device=device, dtype=torch.float32).add_(0.5).unsqueeze(-1)
    return xs, ys, torch.tensor([w, h], device=device, dtype=torch.float32).view(1, 2, 1, 1)


def warp(x: Tensor, inverse: Tensor) -> Tensor:
    """Apply per-sample inverse pixel matrices ``(B, 2, 3)``: nearest, zero fill, any dtype.

    One gather from the image padded by a zero border, with one index per output pixel: the
    nearest source pixel is PIL's ``floor`` of the source coordinate of each output pixel
    centre, clamped onto the border (both axes computed together).
    """
    b, c, h, w = x.shape
    m = inverse.to(device=x.device, dtype=torch.float32)[..., None, None]  # (B, 2, 3, 1, 1)
    per_x, per_y, offset = m.unbind(2)
    xs, ys, limit = _pixel_centres(x.device, h, w)
    # (B, 2, H, W): source x (axis 0) and y (axis 1) of every output pixel
    src = torch.add(per_x * xs, per_y * ys + offset)
    src = src.floor_().clamp_(min=-1.0).clamp_(max=limit).add_(1.0)
    index = src[:, 1].mul_(w + 2).add_(src[:, 0])
    index = index.long().view(b, 1, h * w).expand(b, c, h * w)
    padded = F.pad(x, (1, 1, 1, 1)).view(b, c, -1)
    return torch.gather(padded, 2, index).view(b, c, h, w)
