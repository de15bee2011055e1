"""The cell space: DARTS layout as a supernet whose nodes are decision units, and its child.

Cells: ``layers`` cells, reduction cells (stride 2, channels doubled) at ``layers // 3`` and
``2 * layers // 3``; 4 intermediate nodes, each summing 2 (input, op) pairs; the cell output
concatenates the nodes. All normal cells share one genotype, all reduction cells another, so
the decision units are the 4 normal and the 4 reduction nodes (units 0-3 and 4-7), shared
across cells as in DARTS / ISTA-NAS. A node's candidates are all (input j, op k) pairs,
index ``j * 7 + k``, n = (i + 2) * 7 for node i. Stems: DARTS' ImageNet stem (three stride-2
3x3 convs) for inputs >= 160 px, DARTS' CIFAR stem (one 3x3 conv to 3C) otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dha_train.errors import ConfigError
from dha_train.spaces.arch import CellArch, Genotype, decode_cell
from dha_train.spaces.base import Candidate, Selection, SpaceConfig, Supernet, Support
from dha_train.spaces.drawing import draw_cell
from dha_train.spaces.named import cell_baseline
from dha_train.spaces.ops import OPS, FactorizedReduce, ReLUConvBN, primitives
from dha_train.spaces.registry import SpaceImpl

__all__ = ["NODES", "CellSupernet", "CellNetwork", "validate_cell"]

NODES = 4
CONCAT = (2, 3, 4, 5)


def _edge(node: int, j: int) -> int:
    """Index of the edge from input ``j`` into ``node`` (node i has i + 2 inputs)."""
    return node * (node + 3) // 2 + j


@dataclass(frozen=True)
class _CellSpec:
    c_pp: int
    c_p: int
    c: int
    reduction: bool
    reduction_prev: bool
    side: int  # side of the cell's (preprocessed) inputs

    def stride(self, j: int) -> int:
        """Stride of an edge reading input ``j`` (the two cell inputs stride in a reduction)."""
        return 2 if self.reduction and j < 2 else 1

    def input_side(self, j: int) -> int:
        """Side of input ``j``: cell inputs at ``side``, nodes after the (strided) edges."""
        return self.side if j < 2 or not self.reduction else -(-self.side // 2)


def _plan(c: int, layers: int, resolution: int, imagenet: bool, multiplier: int) -> list[_CellSpec]:
    c_pp, c_p, side = (c, c, -(-resolution // 8)) if imagenet else (3 * c, 3 * c, resolution)
    reduction_prev, specs, c_curr = imagenet, [], c
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        c_curr *= 2 if reduction else 1
        specs.append(_CellSpec(c_pp, c_p, c_curr, reduction, reduction_prev, side))
        c_pp, c_p, reduction_prev = c_p, multiplier * c_curr, reduction
        side = -(-side // 2) if reduction else side
    return specs


class _Stem(nn.Module):
    """Two stem outputs (s0, s1) as DARTS builds them for ImageNet or CIFAR."""

    def __init__(self, c_in: int, c: int, imagenet: bool) -> None:
        super().__init__()
        self.imagenet = imagenet
        if imagenet:
            self.stem0 = nn.Sequential(
                nn.Conv2d(c_in, c // 2, 3, 2, 1, bias=False),
                nn.BatchNorm2d(c // 2),
                nn.ReLU(inplace=True),
                nn.Conv2d(c // 2, c, 3, 2, 1, bias=False),
                nn.BatchNorm2d(c),
            )
            self.stem1 = nn.Sequential(
                nn.ReLU(inplace=False), nn.Conv2d(c, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c)
            )
        else:
            self.stem0 = nn.Sequential(
                nn.Conv2d(c_in, 3 * c, 3, 1, 1, bias=False), nn.BatchNorm2d(3 * c)
            )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s0 = self.stem0(x)
        return (s0, self.stem1(s0)) if self.imagenet else (s0, s0)


class _CellBase(nn.Module):
    def _build_preprocess(self, spec: _CellSpec) -> None:
        self.preprocess0 = (
            FactorizedReduce(spec.c_pp, spec.c)
            if spec.reduction_prev
            else ReLUConvBN(spec.c_pp, spec.c, 1, 1, 0)
        )
        self.preprocess1 = ReLUConvBN(spec.c_p, spec.c, 1, 1, 0)


class Cell(_CellBase):
    """A derived cell: only the genotype's 8 operations."""

    def __init__(self, spec: _CellSpec, genotype: Genotype) -> None:
        super().__init__()
        self._build_preprocess(spec)
        pairs = genotype.reduce if spec.reduction else genotype.normal
        self.concat = genotype.reduce_concat if spec.reduction else genotype.normal_concat
        self.indices = [j for _, j in pairs]
        self.ops = nn.ModuleList(OPS[op](spec.c, spec.stride(j)) for op, j in pairs)

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self.ops) // 2):
            a, b = 2 * i, 2 * i + 1
            states.append(
                self.ops[a](states[self.indices[a]]) + self.ops[b](states[self.indices[b]])
            )
        return torch.cat([states[i] for i in self.concat], dim=1)


class _SearchCell(_CellBase):
    """A supernet cell: every (input, op) edge of every node; runs only the selected ones."""

    def __init__(self, spec: _CellSpec) -> None:
        super().__init__()
        self._build_preprocess(spec)
        self.n_ops = len(primitives())
        self.edges = nn.ModuleList(
            nn.ModuleList(OPS[op](spec.c, spec.stride(j)) for op in primitives())
            for i in range(NODES)
            for j in range(i + 2)
        )

    def forward(self, s0: Tensor, s1: Tensor, selection: Selection, first_unit: int) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(NODES):
            unit = first_unit + i
            weight = selection.weight(unit)
            total: Tensor | None = None
            for t, c in enumerate(selection.support[unit]):
                j, k = divmod(c, self.n_ops)
                out = self.edges[_edge(i, j)][k](states[j])
                out = out if weight is None else out * weight[t]
                total = out if total is None else total + out
            assert total is not None  # every node has a non-empty support
            states.append(total)
        return torch.cat(states[2:], dim=1)


class _Network(nn.Module):
    def _build_fixed(self, cfg: SpaceConfig | CellArch, multiplier: int) -> list[_CellSpec]:
        imagenet = cfg.resolution >= 160
        specs = _plan(cfg.init_channels, cfg.layers, cfg.resolution, imagenet, multiplier)
        self.stem = _Stem(cfg.in_channels, cfg.init_channels, imagenet)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(multiplier * specs[-1].c, cfg.num_classes)
        return specs

    def _classify(self, x: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.pool(x).flatten(1)))


class CellNetwork(_Network):
    """A standalone network of the cell space (the derived child / a published net)."""

    def __init__(self, arch: CellArch) -> None:
        super().__init__()
        validate_cell(arch)
        g = arch.genotype
        if len(g.normal_concat) != len(g.reduce_concat):
            raise ConfigError("genotype normal_concat and reduce_concat must have equal lengths")
        specs = self._build_fixed(arch, len(g.normal_concat))
        self.cells = nn.ModuleList(Cell(spec, g) for spec in specs)

    def forward(self, x: Tensor) -> Tensor:
        s0, s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self._classify(s1)


class CellSupernet(_Network, Supernet):
    """DARTS-layout supernet with one decision unit per normal / reduction node."""

    def __init__(self, cfg: SpaceConfig) -> None:
        super().__init__()
        self.config = cfg
        self.primitives = primitives()  # the ops table when this supernet was built
        self._specs = self._build_fixed(cfg, NODES)
        self.cells = nn.ModuleList(_SearchCell(spec) for spec in self._specs)
        sizes = tuple((i + 2) * len(self.primitives) for i in range(NODES))
        self.unit_sizes = sizes + sizes
        self.unit_topk = tuple(2 for _ in self.unit_sizes)
        self._freeze_scale_affines()

    def forward(self, x: Tensor, selection: Selection) -> Tensor:
        s0, s1 = self.stem(x)
        for spec, cell in zip(self._specs, self.cells, strict=True):
            s0, s1 = s1, cell(s0, s1, selection, NODES if spec.reduction else 0)
        return self._classify(s1)

    def candidate_names(self, unit: int) -> list[str]:
        return [f"{op}<-{j}" for j in range(unit % NODES + 2) for op in self.primitives]

    def candidate_instances(self, unit: int, index: int) -> list[Candidate]:
        node, reduction = unit % NODES, unit >= NODES
        j, k = divmod(index, len(self.primitives))
        found = []
        for spec, cell in zip(self._specs, self.cells, strict=True):
            if spec.reduction != reduction:
                continue
            side = spec.input_side(j)
            key = (self.primitives[k], spec.c, spec.stride(j), side)
            module = cell.edges[_edge(node, j)][k]
            found.append(Candidate(module, (1, spec.c, side, side), key))
        return found

    def architecture(self, support: Sequence[Sequence[int]]) -> CellArch:
        n_ops = len(self.primitives)

        def pairs(units: Sequence[Sequence[int]]) -> tuple[tuple[str, int], ...]:
            return tuple((self.primitives[c % n_ops], c // n_ops) for s in units for c in s)

        cfg = self.config
        genotype = Genotype(pairs(support[:NODES]), CONCAT, pairs(support[NODES:]), CONCAT)
        return CellArch(
            num_classes=cfg.num_classes,
            resolution=cfg.resolution,
            init_channels=cfg.init_channels,
            layers=cfg.layers,
            genotype=genotype,
            in_channels=cfg.in_channels,
            dropout=cfg.dropout,
        )

    def support_of(self, arch: CellArch) -> Support:
        n_ops, g = len(self.primitives), arch.genotype
        flat = [j * n_ops + self.primitives.index(op) for op, j in (*g.normal, *g.reduce)]
        return tuple(tuple(flat[2 * u : 2 * u + 2]) for u in range(2 * NODES))

    def child_state_dict(self, support: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        state = {k: v for k, v in self.state_dict().items() if ".edges." not in k}
        for n, (spec, cell) in enumerate(zip(self._specs, self.cells, strict=True)):
            first_unit = NODES if spec.reduction else 0
            for i in range(NODES):
                for t, c in enumerate(support[first_unit + i]):
                    j, k = divmod(c, len(self.primitives))
                    module = cell.edges[_edge(i, j)][k]
                    for name, v in module.state_dict().items():
                        state[f"cells.{n}.ops.{2 * i + t}.{name}"] = v
        return state


def validate_cell(arch: CellArch) -> None:
    """Raise ConfigError unless ``arch`` fits the cell layout."""
    if arch.init_channels < 2 or arch.layers < 3 or arch.num_classes <= 0 or arch.resolution < 8:
        raise ConfigError(
            f"cell architecture has init_channels={arch.init_channels}, layers={arch.layers}, "
            f"num_classes={arch.num_classes}, resolution={arch.resolution}; expected "
            "init_channels >= 2, layers >= 3, num_classes > 0, resolution >= 8"
        )
    g = arch.genotype
    for kind, pairs, concat in (
        ("normal", g.normal, g.normal_concat),
        ("reduce", g.reduce, g.reduce_concat),
    ):
        if len(pairs) != 2 * NODES:
            raise ConfigError(f"genotype {kind} has {len(pairs)} pairs; expected {2 * NODES}")
        for e, (op, j) in enumerate(pairs):
            if op not in OPS:
                raise ConfigError(
                    f"genotype {kind} op {op!r}; expected one of {list(primitives())}"
                )
            if not 0 <= j < e // 2 + 2:
                raise ConfigError(
                    f"genotype {kind} pair {e} reads input {j}; expected 0..{e // 2 + 1}"
                )
        if not concat or any(not 0 <= i < NODES + 2 for i in concat):
            raise ConfigError(f"genotype {kind}_concat {list(concat)}; expected nodes in 0..5")


SPACE = SpaceImpl(
    supernet=CellSupernet,
    network=CellNetwork,
    decode=decode_cell,
    validate=validate_cell,
    baseline=cell_baseline,
    draw=draw_cell,
)
