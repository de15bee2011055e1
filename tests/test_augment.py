"""Each DA op agrees with torchvision's PIL implementation (RandAugment's ``_apply_op``).

Tolerance: on uint8-quantised inputs, 99.5% of pixels within 2/255 of PIL's output and a mean
absolute difference under 1/255 (both truncate to uint8 after each op; PIL computes gray
images and filters in 8 bits, we in float). The larger size runs the ops that work a few
samples at a time (lookup tables, float blends) over more than one chunk.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import autoaugment as tv_autoaugment
from torchvision.transforms import functional as tvf

from dha_train.da.augment import apply_op, apply_pairs, sample_magnitudes, standard_augment
from dha_train.da.operations import AUGMENT_OPS, NUM_OPS, OPS, op_parameter, warp

_ENHANCE = {"Color", "Contrast", "Brightness", "Sharpness"}


def _images(h: int = 24, w: int = 32, n: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(n, 3, 6, 8, generator=g)
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return (x * 255).round() / 255


def _pil_reference(img: torch.Tensor, name: str, param: float) -> torch.Tensor:
    """torchvision's RandAugment op on a PIL image, with its own parameter convention."""
    if name == "Solarize":
        param *= 255.0
    elif name in _ENHANCE:
        param -= 1.0  # torchvision adds 1.0 itself
    elif name in {"Posterize", "TranslateX", "TranslateY"}:
        param = int(param)
    pil = tvf.to_pil_image((img * 255).round().to(torch.uint8))
    out = tv_autoaugment._apply_op(pil, name, param, InterpolationMode.NEAREST, None)
    return tvf.pil_to_tensor(out).float() / 255


def test_registry_is_the_papers_fourteen_ops() -> None:
    assert NUM_OPS == 14
    assert len(set(OPS)) == 14
    assert OPS[-1] == "Identity"


@pytest.mark.parametrize("size", [(24, 32, 5), (160, 160, 8)], ids=["24x32", "160x160"])
@pytest.mark.parametrize("name", OPS)
def test_op_matches_torchvision_pil(name: str, size: tuple[int, int, int]) -> None:
    h, w, n = size
    x = _images(h, w, n)
    # Every sample its own magnitude and sign, all in one batched call. Beyond 0 and 10 the
    # magnitudes are random: a rational one puts some output pixels exactly halfway between
    # two source pixels, where PIL's double arithmetic and ours may round either way.
    mags = torch.rand(n, generator=torch.Generator().manual_seed(0)) * 10.0
    mags[0], mags[-1] = 0.0, 10.0
    signs = torch.tensor([1.0, -1.0]).repeat(n)[:n]
    k = OPS.index(name)
    out = apply_op(x, torch.full((n,), k), mags, signs)
    params = op_parameter(name, mags, signs, (h, w))
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(n):
        ref = _pil_reference(x[i], name, float(params[i]))
        diff = (out[i] - ref).abs()
        assert (diff <= 2 / 255).float().mean() >= 0.995, (name, i)
        assert diff.mean() < 1 / 255, (name, i)


def test_magnitude_ranges_follow_randaugment() -> None:
    ten, one = torch.tensor([10.0]), torch.tensor([1.0])
    assert float(op_parameter("Rotate", ten, one, (32, 32))) == pytest.approx(30.0)
    assert float(op_parameter("ShearX", ten, -one, (32, 32))) == pytest.approx(-0.3)
    assert float(op_parameter("TranslateX", ten, one, (32, 32))) == 14.0  # int(150/331*32)
    assert float(op_parameter("Posterize", ten, one, (32, 32))) == 4.0
    assert float(op_parameter("Posterize", torch.tensor([0.0]), one, (32, 32))) == 8.0
    assert float(op_parameter("Solarize", ten, one, (32, 32))) == pytest.approx(0.0)
    assert float(op_parameter("Brightness", ten, -one, (32, 32))) == pytest.approx(0.1)
    assert all(
        op.signed == (op.max_value > 0 and name not in {"Posterize", "Solarize"})
        for name, op in AUGMENT_OPS.items()
    )


@pytest.mark.parametrize("size", [(24, 32), (7, 9)], ids=["rows-of-words", "rows-of-bytes"])
def test_pairs_apply_in_order_per_sample(size: tuple[int, int]) -> None:
    x = _images(*size, n=4)
    g = torch.Generator().manual_seed(3)
    mags, signs = sample_magnitudes(4, g)
    assert mags.shape == (4, 2) and ((mags >= 0) & (mags <= 10)).all()
    assert set(signs.unique().tolist()) <= {-1.0, 1.0}
    pairs = torch.tensor(
        [
            [OPS.index("Rotate"), OPS.index("Solarize")],
            [OPS.index("Solarize"), OPS.index("Rotate")],
            [OPS.index("Identity"), OPS.index("Equalize")],
            [OPS.index("ShearX"), OPS.index("Contrast")],
        ]
    )
    out = apply_pairs(x, pairs, mags, signs)
    for i in range(4):
        one = apply_op(x[i : i + 1], pairs[i, :1], mags[i, :1], signs[i, :1])
        two = apply_op(one, pairs[i, 1:], mags[i, 1:], signs[i, 1:])
        torch.testing.assert_close(out[i : i + 1], two)
    # order matters: Rotate-then-Solarize differs from Solarize-then-Rotate on the fill
    assert not torch.equal(out[0], out[1])


def test_uint8_batches_give_the_float_result_and_stay_unchanged() -> None:
    x = _images(n=28)
    x8 = (x * 255).round().to(torch.uint8)
    before = x8.clone()
    g = torch.Generator().manual_seed(1)
    pairs = torch.stack([torch.arange(28) % NUM_OPS, torch.arange(28).flip(0) % NUM_OPS], 1)
    mags, signs = sample_magnitudes(28, g)
    out8 = apply_pairs(x8, pairs, mags, signs)
    assert out8.dtype == torch.float32 and out8.shape == x.shape
    assert float(out8.min()) >= 0.0 and float(out8.max()) <= 1.0
    torch.testing.assert_close(out8, apply_pairs(x, pairs, mags, signs), rtol=0, atol=0)
    assert torch.equal(x8, before)


def test_standard_augment_is_a_zero_padded_crop_or_flip() -> None:
    x = _images(h=16, w=16, n=64)
    out = standard_augment(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    for i in range(64):
        found = False
        for flip in (False, True):
            src = x[i].flip(-1) if flip else x[i]
            padded = torch.nn.functional.pad(src, (2, 2, 2, 2))
            for dy in range(5):
                for dx in range(5):
                    if torch.equal(padded[:, dy : dy + 16, dx : dx + 16], out[i]):
                        found = True
        assert found, i


def test_magnitudes_are_uniform_on_0_10_and_signs_fair() -> None:
    """Sec. 3.1: every op's magnitude is drawn from U[0, 10]; signed ops flip with p = 1/2."""
    from scipy.stats import kstest

    mags, signs = sample_magnitudes(4000, torch.Generator().manual_seed(0))
    assert mags.shape == signs.shape == (4000, 2)
    flat = mags.flatten().numpy()
    assert kstest(flat / 10.0, "uniform").pvalue > 0.01
    assert flat.min() >= 0.0 and flat.max() <= 10.0
    assert set(signs.unique().tolist()) == {-1.0, 1.0}
    assert abs(float((signs > 0).float().mean()) - 0.5) < 0.03
    # first and second op of a pair draw independently
    assert abs(float(torch.corrcoef(mags.T)[0, 1])) < 0.05


@pytest.mark.parametrize(
    "size", [(24, 32), (7, 9), (72, 80)], ids=["rows-of-words", "rows-of-bytes", "shift-kernels"]
)
def test_translations_are_exact_zero_filled_shifts(size: tuple[int, int]) -> None:
    """Whole-pixel translations, shifts of the whole side or more included (zeros only),
    equal a window of the zero-padded image exactly: ``out[u] = x[u - p]``."""
    h, w = size
    x = _images(h, w, n=6)
    mags = torch.tensor([0.0, 3.0, 10.0, 10.0, 7.0, 5.0])
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    for name, dim in (("TranslateX", 2), ("TranslateY", 1)):
        side = x.shape[dim + 1]
        shifts = op_parameter(name, mags * 3.0, signs, (h, w)).long().clamp(-side, side)
        out = apply_op(x, torch.full((6,), OPS.index(name)), mags * 3.0, signs)
        for i, p in enumerate(shifts.tolist()):
            pad = (side, side) if dim == 2 else (0, 0, side, side)
            ref = torch.nn.functional.pad(x[i], pad).narrow(dim, side - p, side)
            torch.testing.assert_close(out[i], ref, rtol=0, atol=0)


@pytest.mark.parametrize("size", [(24, 32), (7, 9), (72, 80)])
@pytest.mark.parametrize("name", [name for name, op in AUGMENT_OPS.items() if op.matrix])
def test_geometric_ops_give_the_same_pixels_as_one_warp_or_alone(
    name: str, size: tuple[int, int]
) -> None:
    """Small images run a stage's geometric ops as one warp of their matrices, large ones each
    op's own kernel (row and column shifts for shears and translations): the same pixels."""
    h, w = size
    x = (_images(h, w, n=16) * 255).round().to(torch.uint8)
    g = torch.Generator().manual_seed(5)
    mags, signs = sample_magnitudes(16, g, ops_per_sample=1)
    op = AUGMENT_OPS[name]
    p = op_parameter(name, mags[:, 0], signs[:, 0], (h, w))
    alone = x.clone()
    assert op.pixel is not None and op.matrix is not None
    op.pixel(alone, p)
    torch.testing.assert_close(warp(x, op.matrix(p, h, w)), alone, rtol=0, atol=0)
