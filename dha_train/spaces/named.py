"""Published architectures as data, and the spaces' fixed baselines (``mode=baseline``).

- ``proxylessnas_gpu``: ProxylessNAS-GPU (Cai et al., 2019), mobilenet space, width 1.35; the
  block choices as released in ``mit-han-lab/proxylessnas`` (proxyless_gpu). Published:
  7.12M params, 465M multiply-adds at 224 px.
- ``darts_v2``: DARTS (2nd order) genotype (``quark0/darts`` cnn/genotypes.py), ImageNet
  network C=48, 14 cells. Published: 4.7M params.
"""

from __future__ import annotations

from collections.abc import Callable

from dha_train.errors import ConfigError
from dha_train.spaces.arch import Architecture, CellArch, Genotype, MobileNetArch
from dha_train.spaces.base import SpaceConfig

__all__ = [
    "DARTS_V2",
    "PROXYLESSNAS_GPU_BLOCKS",
    "NAMED_ARCHITECTURES",
    "named_architecture",
    "mobilenet_baseline",
    "cell_baseline",
]

DARTS_V2 = Genotype(
    normal=(
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ),
    reduce_concat=(2, 3, 4, 5),
)

_ID = "identity"
PROXYLESSNAS_GPU_BLOCKS = (
    "mbconv_k5_e3", _ID, _ID, _ID,  # 24
    "mbconv_k7_e3", _ID, _ID, "mbconv_k3_e3",  # 40
    "mbconv_k7_e6", _ID, _ID, "mbconv_k5_e3",  # 80
    "mbconv_k5_e6", _ID, "mbconv_k3_e3", "mbconv_k5_e3",  # 96
    "mbconv_k7_e6", "mbconv_k7_e6", "mbconv_k7_e6", "mbconv_k5_e6",  # 192
    "mbconv_k7_e6",  # 320
)  # fmt: skip


def _proxylessnas_gpu(num_classes: int, resolution: int) -> Architecture:
    return MobileNetArch(num_classes, resolution, 1.35, PROXYLESSNAS_GPU_BLOCKS)


def _darts_v2(num_classes: int, resolution: int) -> Architecture:
    return CellArch(num_classes, resolution, init_channels=48, layers=14, genotype=DARTS_V2)


NAMED_ARCHITECTURES: dict[str, Callable[[int, int], Architecture]] = {
    "proxylessnas_gpu": _proxylessnas_gpu,
    "darts_v2": _darts_v2,
}


def named_architecture(
    name: str, *, num_classes: int = 1000, resolution: int = 224
) -> Architecture:
    """A published architecture from :data:`NAMED_ARCHITECTURES` for the given task size."""
    if name not in NAMED_ARCHITECTURES:
        raise ConfigError(
            f"unknown architecture {name!r}; expected one of {sorted(NAMED_ARCHITECTURES)}"
        )
    return NAMED_ARCHITECTURES[name](num_classes, resolution)


def mobilenet_baseline(cfg: SpaceConfig) -> MobileNetArch:
    """MobileNetV2-like: MBConv k3 e6 in every layer."""
    return MobileNetArch(
        cfg.num_classes, cfg.resolution, cfg.width_mult, ("mbconv_k3_e6",) * 21,
        in_channels=cfg.in_channels, dropout=cfg.dropout,
    )  # fmt: skip


def cell_baseline(cfg: SpaceConfig) -> CellArch:
    """The DARTS_V2 genotype at the configured C and number of cells."""
    return CellArch(
        cfg.num_classes, cfg.resolution, cfg.init_channels, cfg.layers, DARTS_V2,
        in_channels=cfg.in_channels, dropout=cfg.dropout,
    )  # fmt: skip
