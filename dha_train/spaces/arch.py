"""Architecture records: frozen, printable, versioned JSON.

JSON schema (``"schema_version": 1``), common fields:

- ``schema_version`` (int, 1), ``space`` (a name in ``spaces.registry.SPACES``),
- ``num_classes`` (int > 0), ``resolution`` (input side in pixels; >= 160 selects the ImageNet
  stem), ``in_channels`` (int, default 3), ``dropout`` (float in [0, 1), before the classifier).

``space == "mobilenet"`` (ProxylessNAS layout, 21 searchable layers in 6 stages):

- ``width_mult`` (float > 0),
- ``blocks``: 21 strings, one per searchable layer, ``"mbconv_k{3,5,7}_e{3,6}"`` or
  ``"identity"`` (only where the layer has stride 1 and in == out).

``space == "cell"`` (DARTS layout):

- ``init_channels`` (C, int > 0), ``layers`` (number of cells, int >= 3),
- ``genotype``: ``{"normal": [[op, input], ...] (8 pairs, 2 per node), "normal_concat":
  [2, 3, 4, 5], "reduce": [...], "reduce_concat": [...]}``; ``op`` is a key of ``ops.OPS``,
  ``input`` of node i is in 0..i+1 (0, 1 = the two previous cells, 2.. = earlier nodes).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from dha_train.errors import ConfigError
from dha_train.spaces.registry import SPACES, space_impl

__all__ = [
    "SCHEMA_VERSION",
    "Genotype",
    "MobileNetArch",
    "CellArch",
    "Architecture",
    "need",
    "common_fields",
    "decode_mobilenet",
    "decode_cell",
    "architecture_from_dict",
    "save_architecture",
    "load_architecture",
]

SCHEMA_VERSION = 1


class Genotype(NamedTuple):
    """A DARTS cell genotype: (op, input) pairs, two per node, and the concatenated nodes."""

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]


@dataclass(frozen=True)
class MobileNetArch:
    """A network of the mobilenet space (one block string per searchable layer)."""

    num_classes: int
    resolution: int
    width_mult: float
    blocks: tuple[str, ...]
    in_channels: int = 3
    dropout: float = 0.0
    space: str = "mobilenet"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"] = list(self.blocks)
        return {"schema_version": SCHEMA_VERSION, **d}


@dataclass(frozen=True)
class CellArch:
    """A network of the cell space (one genotype shared by all normal / reduction cells)."""

    num_classes: int
    resolution: int
    init_channels: int
    layers: int
    genotype: Genotype
    in_channels: int = 3
    dropout: float = 0.0
    space: str = "cell"

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "genotype"}
        g = self.genotype
        d["genotype"] = {
            "normal": [list(p) for p in g.normal],
            "normal_concat": list(g.normal_concat),
            "reduce": [list(p) for p in g.reduce],
            "reduce_concat": list(g.reduce_concat),
        }
        return {"schema_version": SCHEMA_VERSION, **d}


class Architecture(Protocol):
    """What every space's architecture record has (each space defines its own record)."""

    @property
    def space(self) -> str: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def resolution(self) -> int: ...
    @property
    def in_channels(self) -> int: ...
    @property
    def dropout(self) -> float: ...

    def to_dict(self) -> dict[str, Any]: ...


def need(d: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise ConfigError(f"architecture JSON lacks field {key!r}; see dha_train/spaces/arch.py")
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"architecture field {key!r} is {value!r}; expected {kind}; fix the JSON")
    return value


def common_fields(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "num_classes": need(d, "num_classes", int),
        "resolution": need(d, "resolution", int),
        "in_channels": int(d.get("in_channels", 3)),
        "dropout": float(d.get("dropout", 0.0)),
    }


def decode_mobilenet(d: dict[str, Any]) -> MobileNetArch:
    blocks = need(d, "blocks", list)
    return MobileNetArch(
        width_mult=float(need(d, "width_mult", (int, float))),
        blocks=tuple(str(b) for b in blocks),
        **common_fields(d),
    )


def _pairs(raw: Any, key: str) -> tuple[tuple[str, int], ...]:
    if not isinstance(raw, list) or not all(
        isinstance(p, list | tuple) and len(p) == 2 for p in raw
    ):
        raise ConfigError(f"genotype {key!r} is {raw!r}; expected a list of [op, input] pairs")
    return tuple((str(op), int(j)) for op, j in raw)


def decode_cell(d: dict[str, Any]) -> CellArch:
    g = need(d, "genotype", dict)
    genotype = Genotype(
        normal=_pairs(g.get("normal"), "normal"),
        normal_concat=tuple(int(i) for i in g.get("normal_concat", (2, 3, 4, 5))),
        reduce=_pairs(g.get("reduce"), "reduce"),
        reduce_concat=tuple(int(i) for i in g.get("reduce_concat", (2, 3, 4, 5))),
    )
    return CellArch(
        init_channels=need(d, "init_channels", int),
        layers=need(d, "layers", int),
        genotype=genotype,
        **common_fields(d),
    )


def architecture_from_dict(d: dict[str, Any]) -> Architecture:
    """Decode and validate an architecture dict (the JSON schema in this module's docstring)."""
    if not isinstance(d, dict):
        raise ConfigError(f"architecture JSON is a {type(d).__name__}; expected an object")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ConfigError(
            f"architecture schema_version is {version!r}; expected {SCHEMA_VERSION}; "
            "re-export the architecture with this version of dha"
        )
    space = d.get("space")
    if space not in SPACES:
        raise ConfigError(f"architecture space is {space!r}; expected one of {sorted(SPACES)}")
    impl = space_impl(space)  # each space decodes and checks its own record
    arch = impl.decode(d)
    impl.validate(arch)
    return arch


def save_architecture(arch: Architecture, path: str | Path) -> Path:
    """Write ``arch`` as indented JSON; returns the path."""
    path = Path(path)
    path.write_text(json.dumps(arch.to_dict(), indent=2) + "\n")
    return path


def load_architecture(path: str | Path) -> Architecture:
    """Read an architecture JSON written by :func:`save_architecture` (or by hand)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(
            f"architecture file {path} does not exist; give an existing path"
        ) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"architecture file {path} is not valid JSON ({exc})") from exc
    except OSError as exc:  # a folder, no permission
        raise ConfigError(f"architecture file {path} cannot be read ({exc.strerror})") from exc
    return architecture_from_dict(d)
