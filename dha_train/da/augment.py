"""Sec. 3.1: the DA policy's ops applied to a batch on the device, one ordered pair per sample.

The ops work on 8-bit images, as PIL does: :func:`apply_pairs` takes a batch ``(B, 3, H, W)``
as uint8 (as the DataLoader hands it over) or float in ``[0, 1]`` (quantised to 8 bits) and
returns float in ``[0, 1]``, converted once at the end. Each sample has its own ordered pair
of ops and magnitudes, applied as two stages (first op of every sample, then second). A stage
reorders the batch so that the samples of one op are contiguous, then touches each pixel
about once: point ops are per-sample, per-channel 256-entry lookup tables (built from means,
min/max or histograms), all run as one gather; posterize and solarize are bit operations;
colour and sharpness blend in float on their slice; shears and translations move whole rows
or columns (one gather along one axis); rotation is one 2-D nearest gather.

Magnitudes are drawn uniformly from ``[0, 10]`` (paper) and signed operations flip their
sign with probability 1/2; the operations and their parameters are the table in
:mod:`dha_train.da.operations`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dha_train.da.operations import (
    AUGMENT_OPS,
    MAX_MAGNITUDE,
    NUM_OPS,
    OPS,
    affine_matrix,
    op_parameters,
    warp,
)

__all__ = ["apply_op", "apply_pairs", "sample_magnitudes", "standard_augment"]


def _lookup_(x: Tensor, levels: Tensor, chunk: int = 1 << 19) -> None:
    """Per-sample, per-channel tables ``(n, C, 256)`` of float levels, applied in place, a
    few samples at a time (their int64 index then stays in cache)."""
    table = levels.clamp(0.0, 255.0).to(torch.uint8)  # truncated, as PIL's tables are
    flat = x.view(x.shape[0], x.shape[1], -1)
    step = max(1, chunk // flat[0].numel())
    for i in range(0, flat.shape[0], step):
        part = flat[i : i + step]
        torch.gather(table[i : i + step], 2, part.long(), out=part)


def _select_rows(x: Tensor, order: Tensor) -> Tensor:
    """``x[order]`` along dim 0, copied as 8-byte words where the rows allow it (a uint8
    ``index_select`` copies byte by byte, 4x slower here)."""
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] % 8 or flat.storage_offset() % 8:
        return x.index_select(0, order)
    return flat.view(torch.int64).index_select(0, order).view(torch.uint8).view(x.shape)


def _kind(k: int) -> int:
    """Identity, table ops, other pixel ops, geometric ops: a stage's blocks, in this order."""
    op = AUGMENT_OPS[OPS[k]]
    return 3 if op.matrix is not None else 2 if op.pixel is not None else int(op.table is not None)


_STAGE_ORDER: tuple[int, ...] = tuple(sorted(range(NUM_OPS), key=lambda k: (_kind(k), k)))
_RANK = torch.tensor([_STAGE_ORDER.index(k) for k in range(NUM_OPS)])
# Images of at most this many pixels run a stage's geometric ops as one warp, larger ones
# each op with its own kernel: an op group costs about 20 small tensor ops whatever its size,
# a warp's index per pixel costs more than row shifts on large images. apply_pairs, one warp
# against one kernel per op, one thread, B = 128 (2-core EPYC VM, 2026-12-02): 1.08-1.10x
# faster at 32 px, 1.03x at 40 px, 0.95-0.98x at 48-64 px.
ONE_WARP_MAX_PIXELS = 40 * 40


def _apply_sorted(x: Tensor, op_ids: Tensor, params: Tensor) -> None:
    """One stage in place on a uint8 batch already sorted by ``_RANK[op_ids]``: the table
    ops' groups as one lookup, on small images the geometric ops' groups as one warp."""
    counts = torch.bincount(op_ids, minlength=NUM_OPS).tolist()
    one_warp = x.shape[2] * x.shape[3] <= ONE_WARP_MAX_PIXELS
    start = 0
    tables: list[tuple[slice, Tensor]] = []
    matrices: list[tuple[slice, Tensor]] = []
    for k in _STAGE_ORDER:
        if counts[k] == 0:
            continue
        group = slice(start, start + counts[k])
        start += counts[k]
        op = AUGMENT_OPS[OPS[k]]
        param = params[group]
        if op.table is not None:
            tables.append((group, op.table(x[group], param).expand(-1, x.shape[1], -1)))
        elif one_warp and op.matrix is not None:
            matrices.append((group, op.matrix(param, x.shape[2], x.shape[3])))
        elif op.pixel is not None:
            op.pixel(x[group], param)
    if tables:  # the groups of each block are contiguous
        _lookup_(_block(x, tables), torch.cat([t for _, t in tables]))
    if matrices:
        block = _block(x, matrices)
        block.copy_(warp(block, torch.cat([m for _, m in matrices])))


def _block(x: Tensor, groups: list[tuple[slice, Tensor]]) -> Tensor:
    """The rows of ``x`` from the first group's start to the last group's stop."""
    return x[groups[0][0].start : groups[-1][0].stop]


def apply_pairs(x: Tensor, pairs: Tensor, magnitudes: Tensor, signs: Tensor) -> Tensor:
    """Apply each sample's ordered ops ``pairs[i] = (first, second)`` (all ``(B, stages)``).

    ``x`` is uint8 in ``[0, 255]`` or float in ``[0, 1]`` (quantised to 8 bits); returns a new
    float tensor in ``[0, 1]`` (float32, or ``x``'s float dtype) in ``x``'s sample order.
    ``x`` is not modified.
    """
    dtype = x.dtype if x.is_floating_point() else torch.float32
    if x.dtype != torch.uint8:
        x = x.mul(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
    params = op_parameters(pairs, magnitudes, signs, x.shape[-2:])
    rank = _RANK.to(pairs.device)[pairs]
    rows = torch.arange(x.shape[0], device=x.device)  # rows[j]: the sample held in row j
    for stage in range(pairs.shape[1]):
        order = torch.argsort(rank[rows, stage], stable=True)
        rows = rows[order]
        x = _select_rows(x, order)  # a new tensor, changed in place below
        _apply_sorted(x, pairs[rows, stage], params[rows, stage])
    return _to_unit_float(x, torch.argsort(rows), dtype)


def _to_unit_float(x: Tensor, order: Tensor, dtype: torch.dtype, chunk: int = 1 << 19) -> Tensor:
    """``x[order] / 255`` as ``dtype``; on the CPU a few samples at a time, so that each chunk
    is divided while it is still in cache (one pass over the float batch instead of two); on
    a GPU in one go (a chunk is a kernel launch there, not a cache's worth)."""
    out = torch.empty(x.shape, dtype=dtype, device=x.device)
    step = max(1, chunk // x[0].numel()) if x.device.type == "cpu" else x.shape[0]
    for i in range(0, x.shape[0], step):
        part = out[i : i + step]
        part.copy_(x.index_select(0, order[i : i + step])).div_(255.0)
    return out


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
    mats = affine_matrix(
        mirror,
        zero,
        (1.0 - mirror) * w * 0.5 - shift[:, 0],
        zero,
        torch.ones_like(zero),
        -shift[:, 1],
    )
    return warp(x, mats.to(x.device))
