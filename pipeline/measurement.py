"""What ``dha measure`` does: resolve a target, count it, time it, report it.

Targets (registry :data:`TARGET_KINDS`, written ``kind:value``; a bare value is tried as a
named architecture, then as an architecture JSON path):

- ``named:<name>`` - a published architecture from ``dha_train.spaces.named``
  (``proxylessnas_gpu``, ``darts_v2``), built at the requested classes and resolution;
- ``torchvision:<name>`` - ``torchvision.models.get_model(name, weights=None, num_classes=N)``;
- ``arch:<path.json>`` - a derived architecture record (its own classes and resolution win),
  with trained weights from ``weights=`` (a state dict file) when given.

JSON report (``MeasureReport.to_json()``), ``"schema_version": 1``::

    {
      "schema_version": 1,
      "target": {"name": str, "kind": "named"|"torchvision"|"arch"|"module",
                 "space": "mobilenet"|"cell"|null, "source": str},
      "resolution": int, "num_classes": int, "input_shape": [C, H, W],
      "params": int, "params_m": float,            # all parameters, BN included
      "multiply_adds": int, "flops_m": float,      # fvcore multiply-adds at batch 1, BN excluded
      "flops_by_operator": {op: multiply_adds},
      "unsupported_operators": {op: occurrences},  # not counted; listed, never dropped silently
      "latency": [{"backend": str, "device": "cpu"|"cuda", "batch_size": int,
                   "status": "ok"|"skipped"|"failed", "reason": str, "threads": int|null,
                   "median_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms": float,
                   "iterations": int, "drift_pct": float,  # see timing.TimingStats
                   "throughput_ips": float|null}],  # timings only if "ok"
      "environment": {"cpu": str, "cpu_count": int, "torch_threads": int, "gpu": str|null,
                      "platform": str, "python": str,
                      "versions": {"torch", "cuda_runtime", "cudnn", "onnxruntime",
                                   "tensorrt": str|null}}
    }
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dha_train.errors import ConfigError, UserError
from dha_train.nas.counting import count_flops, count_params
from pipeline.latency import (
    DEFAULT_TIMING,
    LatencyConfig,
    LatencyResult,
    describe_environment,
    measure_latency,
)

__all__ = [
    "SCHEMA_VERSION",
    "TARGET_KINDS",
    "MeasureReport",
    "Target",
    "measure_model",
    "measure_target",
    "resolve_target",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


@dataclass
class Target:
    """A model ready to measure, with where it came from."""

    name: str
    kind: str
    model: nn.Module
    resolution: int
    num_classes: int
    space: str | None = None  # "mobilenet" | "cell" for architectures of our spaces
    source: str = ""


def _named(value: str, *, num_classes: int, resolution: int, weights: Path | None) -> Target:
    from dha_train.spaces import build_network
    from dha_train.spaces.named import NAMED_ARCHITECTURES, named_architecture

    if value not in NAMED_ARCHITECTURES:
        raise UserError(
            f"unknown named architecture {value!r}; expected one of "
            f"{', '.join(sorted(NAMED_ARCHITECTURES))} (or torchvision:<name>)"
        )
    arch = named_architecture(value, num_classes=num_classes, resolution=resolution)
    model = _load_weights(build_network(arch), weights)
    return Target(value, "named", model, resolution, num_classes, arch.space, f"named:{value}")


def _torchvision(value: str, *, num_classes: int, resolution: int, weights: Path | None) -> Target:
    import torchvision

    choices = torchvision.models.list_models(module=torchvision.models)
    if value not in choices:
        raise UserError(
            f"unknown torchvision model {value!r}; expected a classification model such as "
            "mobilenet_v2 or resnet50 (see torchvision.models.list_models())"
        )
    model = torchvision.models.get_model(value, weights=None, num_classes=num_classes)
    model = _load_weights(model, weights)
    return Target(
        f"torchvision:{value}", "torchvision", model, resolution, num_classes, None, value
    )


def _arch_file(value: str, *, num_classes: int, resolution: int, weights: Path | None) -> Target:
    path = Path(value)
    if not path.is_file():
        raise UserError(
            f"architecture file {value!r} does not exist; pass the architecture JSON a run "
            "wrote (artifact architecture.json) or a named architecture"
        )
    from dha_train.spaces import build_network
    from dha_train.spaces.arch import load_architecture

    arch = load_architecture(path)
    if (arch.num_classes, arch.resolution) != (num_classes, resolution):
        log.info(
            "%s: using its own num_classes=%d, resolution=%d",
            path.name,
            arch.num_classes,
            arch.resolution,
        )
    model = _load_weights(build_network(arch), weights)
    return Target(
        path.stem, "arch", model, arch.resolution, arch.num_classes, arch.space, str(path)
    )


TargetResolver = Callable[..., Target]

TARGET_KINDS: dict[str, TargetResolver] = {
    "named": _named,
    "torchvision": _torchvision,
    "arch": _arch_file,
}


def _load_weights(model: nn.Module, weights: Path | None) -> nn.Module:
    """Load a state dict file (optionally nested under "state_dict"/"model") into ``model``."""
    if weights is None:
        return model
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"weights file {str(path)!r} does not exist; pass a saved state dict")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(
            f"weights {str(path)!r} do not fit the architecture ({first}); pass the weights "
            "saved with this architecture"
        ) from exc
    return model


def _named_names() -> list[str]:
    try:
        from dha_train.spaces.named import NAMED_ARCHITECTURES
    except ImportError:
        return []
    return sorted(NAMED_ARCHITECTURES)


def resolve_target(
    spec: str,
    *,
    num_classes: int = 1000,
    resolution: int = 224,
    weights: str | Path | None = None,
) -> Target:
    """Turn ``kind:value`` (or a bare named architecture / JSON path) into a :class:`Target`."""
    kind, sep, value = spec.partition(":")
    if not sep or kind not in TARGET_KINDS:
        kind, value = ("named", spec) if spec in _named_names() else ("arch", spec)
        if kind == "arch" and not Path(spec).is_file():
            raise UserError(
                f"unknown measurement target {spec!r}; expected one of "
                f"{', '.join(_named_names() or ['<named architecture>'])}, "
                "torchvision:<name>, arch:<architecture.json> or an existing JSON path"
            )
    if num_classes < 1 or resolution < 8:
        raise ConfigError(
            f"num_classes={num_classes}, resolution={resolution} are out of range; "
            "expected num_classes >= 1 and resolution >= 8"
        )
    path = Path(weights) if weights is not None else None
    return TARGET_KINDS[kind](value, num_classes=num_classes, resolution=resolution, weights=path)


@dataclass
class MeasureReport:
    """Counts and latencies of one model (see the module docstring for the JSON schema)."""

    name: str
    kind: str
    space: str | None
    source: str
    resolution: int
    num_classes: int
    input_shape: tuple[int, int, int]
    params: int
    multiply_adds: int
    flops_by_operator: dict[str, int] = field(default_factory=dict)
    unsupported_operators: dict[str, int] = field(default_factory=dict)
    latency: list[LatencyResult] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def flops_m(self) -> float:
        return self.multiply_adds / 1e6

    def latency_of(self, backend: str, device: str, batch_size: int) -> LatencyResult | None:
        """The result for one combination, or ``None`` when it was not measured."""
        key = f"{backend}.{device}.bs{batch_size}"
        return next((r for r in self.latency if r.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "target": {
                "name": self.name,
                "kind": self.kind,
                "space": self.space,
                "source": self.source,
            },
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "params": self.params,
            "params_m": self.params_m,
            "multiply_adds": self.multiply_adds,
            "flops_m": self.flops_m,
            "flops_by_operator": dict(self.flops_by_operator),
            "unsupported_operators": dict(self.unsupported_operators),
            "latency": [r.to_dict() for r in self.latency],
            "environment": self.environment,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def measure_model(
    model: nn.Module,
    *,
    resolution: int,
    num_classes: int,
    in_channels: int = 3,
    backends: Sequence[str] = ("torch",),
    devices: Sequence[str] = ("cpu",),
    batch_sizes: Sequence[int] = (1, 8),
    threads: int | None = None,
    timing: LatencyConfig = DEFAULT_TIMING,
    name: str = "model",
    kind: str = "module",
    space: str | None = None,
    source: str = "",
) -> MeasureReport:
    """Params, multiply-adds (batch 1) and latency of ``model``; ``backends=()`` skips timing."""
    shape = (in_channels, resolution, resolution)
    flops = count_flops(model, (1, *shape))
    latency = measure_latency(
        model,
        input_shape=shape,
        backends=backends,
        devices=devices,
        batch_sizes=batch_sizes,
        threads=threads,
        config=timing,
    )
    return MeasureReport(
        name=name,
        kind=kind,
        space=space,
        source=source,
        resolution=resolution,
        num_classes=num_classes,
        input_shape=shape,
        params=count_params(model),
        multiply_adds=flops.total,
        flops_by_operator=dict(flops.by_operator),
        unsupported_operators=dict(flops.unsupported),
        latency=latency,
        environment=describe_environment(),
    )


def measure_target(target: Target, **options: Any) -> MeasureReport:
    """:func:`measure_model` on a resolved :class:`Target` (options as for measure_model)."""
    return measure_model(
        target.model,
        resolution=target.resolution,
        num_classes=target.num_classes,
        name=target.name,
        kind=target.kind,
        space=target.space,
        source=target.source,
        **options,
    )
