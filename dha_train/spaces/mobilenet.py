"""The mobilenet space: ProxylessNAS layout as a single-path supernet, and its child builder.

Layout: stem 3x3 conv -> fixed MBConv1 k3 -> 6 stages (widths 24, 40, 80, 96, 192, 320,
repeats 4, 4, 4, 4, 4, 1, strides 2, 2, 2, 1, 2, 1) -> 1x1 conv to 1280 -> pool -> linear.
Each of the 21 stage layers is a decision unit choosing one of MBConv k{3,5,7} x e{3,6}, plus
``identity`` (the zero branch of the residual) where stride is 1 and in == out. Widths scale
by ``width_mult`` with ``make_divisible(., 8)``; the last conv keeps 1280 unless widened.
Small inputs (< 160 px) use a stride-1 stem and a stride-1 first stage (total stride 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from dha_train.errors import ConfigError
from dha_train.spaces.arch import MobileNetArch, decode_mobilenet
from dha_train.spaces.base import Candidate, Selection, SpaceConfig, Supernet, Support
from dha_train.spaces.blocks import MBConv, Residual, conv_bn, make_divisible
from dha_train.spaces.drawing import draw_mobilenet
from dha_train.spaces.named import mobilenet_baseline
from dha_train.spaces.registry import SpaceImpl

__all__ = [
    "BLOCKS",
    "IDENTITY",
    "STAGES",
    "Stage",
    "MobileNetSupernet",
    "MobileNetNetwork",
    "validate_mobilenet",
]


@dataclass(frozen=True)
class Stage:
    """``repeats`` searchable layers of output width ``width``; the first has ``stride``."""

    width: int
    repeats: int
    stride: int


# The skeleton as data (ProxylessNAS): stem, a fixed MBConv1, these stages, head.
STAGES = (Stage(24, 4, 2), Stage(40, 4, 2), Stage(80, 4, 2), Stage(96, 4, 1),
          Stage(192, 4, 2), Stage(320, 1, 1))  # fmt: skip
STEM_WIDTH, FIRST_WIDTH, LAST_WIDTH = 32, 16, 1280
# The candidates, by name: MBConv (kernel, expansion), and the residual's zero branch
# ``identity`` (a named candidate of the layers whose stride is 1 and in == out).
BLOCKS: dict[str, tuple[int, int]] = {
    f"mbconv_k{k}_e{e}": (k, e) for k in (3, 5, 7) for e in (3, 6)
}
IDENTITY = "identity"


@dataclass(frozen=True)
class _Layer:
    c_in: int
    c_out: int
    stride: int
    side: int  # input side in pixels

    @property
    def allows_identity(self) -> bool:
        return self.stride == 1 and self.c_in == self.c_out

    @property
    def candidates(self) -> tuple[str, ...]:
        """This layer's candidate names, in decision-unit order."""
        return (*BLOCKS, IDENTITY) if self.allows_identity else tuple(BLOCKS)


@dataclass(frozen=True)
class _Layout:
    stem: int
    first: int
    last: int
    stem_stride: int
    layers: tuple[_Layer, ...]


def _layout(width_mult: float, resolution: int, imagenet_stem: bool) -> _Layout:
    stem_stride = 2 if imagenet_stem else 1
    stem, first = make_divisible(STEM_WIDTH * width_mult), make_divisible(FIRST_WIDTH * width_mult)
    last = make_divisible(LAST_WIDTH * width_mult) if width_mult > 1.0 else LAST_WIDTH
    side = -(-resolution // stem_stride)
    c_in, layers = first, []
    for i, stage in enumerate(STAGES):
        stride = 1 if i == 0 and not imagenet_stem else stage.stride  # small-image stem
        c_out = make_divisible(stage.width * width_mult)
        for r in range(stage.repeats):
            s = stride if r == 0 else 1
            layers.append(_Layer(c_in, c_out, s, side))
            side, c_in = -(-side // s), c_out
    return _Layout(stem, first, last, stem_stride, tuple(layers))


def _config_layout(cfg: SpaceConfig | MobileNetArch) -> _Layout:
    return _layout(cfg.width_mult, cfg.resolution, cfg.resolution >= 160)


class _Backbone(nn.Module):
    """Stem, fixed first block, head and classifier shared by supernet and child."""

    def _build_fixed(self, layout: _Layout, in_channels: int, dropout: float, classes: int) -> None:
        self.stem = conv_bn(in_channels, layout.stem, 3, layout.stem_stride)
        self.first = MBConv(layout.stem, layout.first, 3, 1, 1)
        self.head = conv_bn(layout.layers[-1].c_out, layout.last, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(layout.last, classes)

    def _classify(self, x: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.pool(self.head(x)).flatten(1)))


class MobileNetNetwork(_Backbone):
    """A standalone network of the mobilenet space (the derived child / a published net)."""

    def __init__(self, arch: MobileNetArch) -> None:
        super().__init__()
        validate_mobilenet(arch)
        layout = _config_layout(arch)
        self._build_fixed(layout, arch.in_channels, arch.dropout, arch.num_classes)
        blocks: list[nn.Module] = []
        for spec, name in zip(layout.layers, arch.blocks, strict=True):
            if name == IDENTITY:
                blocks.append(nn.Identity())
                continue
            body = MBConv(spec.c_in, spec.c_out, *BLOCKS[name], spec.stride)
            blocks.append(Residual(body) if spec.allows_identity else body)
        self.layers = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self._classify(self.layers(self.first(self.stem(x))))


class _SearchLayer(nn.Module):
    def __init__(self, spec: _Layer) -> None:
        super().__init__()
        self.residual = spec.allows_identity
        self.names = spec.candidates
        self.candidates = nn.ModuleList(
            MBConv(spec.c_in, spec.c_out, k, e, spec.stride) for k, e in BLOCKS.values()
        )

    def forward(self, x: Tensor, index: int, weight: Tensor | None) -> Tensor:
        if self.names[index] == IDENTITY:  # the residual's zero branch
            return x
        out = self.candidates[index](x)
        if weight is not None:
            out = out * weight
        return x + out if self.residual else out


class MobileNetSupernet(_Backbone, Supernet):
    """Single-path supernet: per layer only the selected MBConv runs, scaled by its alpha."""

    def __init__(self, cfg: SpaceConfig) -> None:
        super().__init__()
        self.config = cfg
        self._layout = _config_layout(cfg)
        self._build_fixed(self._layout, cfg.in_channels, cfg.dropout, cfg.num_classes)
        self.layers = nn.ModuleList(_SearchLayer(spec) for spec in self._layout.layers)
        self.unit_sizes = tuple(len(s.candidates) for s in self._layout.layers)
        self.unit_topk = tuple(1 for _ in self._layout.layers)
        self._freeze_scale_affines()

    def forward(self, x: Tensor, selection: Selection) -> Tensor:
        x = self.first(self.stem(x))
        for unit, layer in enumerate(self.layers):
            x = layer(x, selection.support[unit][0], selection.weight(unit))
        return self._classify(x)

    def candidate_names(self, unit: int) -> list[str]:
        return list(self._layout.layers[unit].candidates)

    def candidate_instances(self, unit: int, index: int) -> list[Candidate]:
        spec = self._layout.layers[unit]
        name = spec.candidates[index]
        if name == IDENTITY:
            return []
        key = ("mbconv", spec.c_in, spec.c_out, *BLOCKS[name], spec.stride, spec.side)
        shape = (1, spec.c_in, spec.side, spec.side)
        return [Candidate(self.layers[unit].candidates[index], shape, key)]

    def architecture(self, support: Sequence[Sequence[int]]) -> MobileNetArch:
        cfg = self.config
        return MobileNetArch(
            num_classes=cfg.num_classes,
            resolution=cfg.resolution,
            width_mult=cfg.width_mult,
            blocks=tuple(self.candidate_names(u)[s[0]] for u, s in enumerate(support)),
            in_channels=cfg.in_channels,
            dropout=cfg.dropout,
        )

    def support_of(self, arch: MobileNetArch) -> Support:
        return tuple((self.candidate_names(u).index(b),) for u, b in enumerate(arch.blocks))

    def child_state_dict(self, support: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("layers.")}
        for unit, chosen in enumerate(support):
            layer, index = self.layers[unit], chosen[0]
            if layer.names[index] == IDENTITY:
                continue
            prefix = f"layers.{unit}.body." if layer.residual else f"layers.{unit}."
            for k, v in layer.candidates[index].state_dict().items():
                state[prefix + k] = v
        return state


def validate_mobilenet(arch: MobileNetArch) -> None:
    """Raise ConfigError unless ``arch`` fits the mobilenet layout."""
    if arch.width_mult <= 0 or arch.num_classes <= 0 or arch.resolution < 8:
        raise ConfigError(
            f"mobilenet architecture has width_mult={arch.width_mult}, num_classes="
            f"{arch.num_classes}, resolution={arch.resolution}; expected positive values, "
            "resolution >= 8"
        )
    layers = _config_layout(arch).layers
    if len(arch.blocks) != len(layers):
        raise ConfigError(
            f"mobilenet architecture has {len(arch.blocks)} blocks; expected {len(layers)}"
        )
    for i, (name, spec) in enumerate(zip(arch.blocks, layers, strict=True)):
        allowed = list(spec.candidates)
        if name not in allowed:
            raise ConfigError(f"mobilenet block {i} is {name!r}; expected one of {allowed}")


SPACE = SpaceImpl(
    supernet=MobileNetSupernet,
    network=MobileNetNetwork,
    decode=decode_mobilenet,
    validate=validate_mobilenet,
    baseline=mobilenet_baseline,
    draw=draw_mobilenet,
)
