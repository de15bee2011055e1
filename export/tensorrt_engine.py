"""ONNX -> TensorRT plan (TensorRT 10 and 11) and the engine's parity gate.

Precision: fp32 builds with TF32 off (the fp32 parity gate is 1e-3). fp16 uses the
builder's FP16 flag where it exists (TensorRT 10); TensorRT 11 removed it and builds
strongly typed networks only, so there fp16 means an fp16 ONNX graph with fp32 inputs and
outputs (:func:`fp16_onnx`). TensorRT is imported inside functions; plans run through
:class:`export.tensorrt_runtime.TensorRTRunner`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from export.engine_sidecar import EngineFiles, EngineSidecar, PlatformInfo, write_engine_files
from export.errors import ExportError
from export.onnx_export import INPUT_NAME, OUTPUT_NAME
from export.parity import (
    PARITY_GATES,
    ParityReport,
    batched_logits,
    compare_logits,
    reference_logits,
    require_parity,
)
from export.tensorrt_runtime import (
    TensorRTRunner,
    current_platform,
    require_tensorrt,
    tensorrt_logger,
)

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = ["timing_cache_path", "fp16_onnx", "build_engine", "check_engine_parity"]

logger = logging.getLogger(__name__)


def timing_cache_path(platform: PlatformInfo) -> Path:
    """The persistent timing cache for this TensorRT version and GPU architecture:
    ``$DHA_CACHE_DIR`` (default ``~/.cache/dha``)``/tensorrt/timing-<trt>-sm<cc>.cache``.
    Builds on the same GPU kind reuse it; another TensorRT or architecture gets its own."""
    root = Path(os.environ.get("DHA_CACHE_DIR") or Path.home() / ".cache" / "dha")
    arch = platform.compute_capability.replace(".", "")
    return root / "tensorrt" / f"timing-{platform.tensorrt_version}-sm{arch}.cache"


def fp16_onnx(onnx_path: Path, out_path: Path) -> Path:
    """Convert an fp32 ONNX graph to float16, keeping float32 inputs and outputs."""
    import onnx
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
    return out_path


def _parse(
    builder: trt.Builder, onnx_path: Path, *, strongly_typed: bool
) -> tuple[trt.INetworkDefinition, trt.OnnxParser]:
    """Parse ``onnx_path`` into a new network definition; return (network, parser)."""
    import tensorrt as trt

    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, builder.logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(
            f"TensorRT could not parse {onnx_path}: {errors}; export with another opset "
            "or simplify=True"
        )
    return network, parser


@dataclass(frozen=True)
class _PrecisionPlan:
    """What to parse and how: the ONNX file, strongly typed or not, builder flags to set."""

    onnx_path: Path
    strongly_typed: bool
    flags: tuple[str, ...]


def _fp32_plan(onnx_path: Path, work_dir: Path) -> _PrecisionPlan:
    return _PrecisionPlan(onnx_path, strongly_typed=False, flags=())


def _fp16_plan(onnx_path: Path, work_dir: Path) -> _PrecisionPlan:
    import tensorrt as trt

    if hasattr(trt.BuilderFlag, "FP16"):  # TensorRT 10: weakly typed network + FP16 flag
        return _PrecisionPlan(onnx_path, strongly_typed=False, flags=("FP16",))
    # TensorRT 11: the flag is gone; the graph itself carries the precision.
    half = fp16_onnx(onnx_path, work_dir / f"{onnx_path.stem}.fp16.onnx")
    return _PrecisionPlan(half, strongly_typed=True, flags=())


_PRECISIONS: dict[str, Callable[[Path, Path], _PrecisionPlan]] = {
    "fp32": _fp32_plan,
    "fp16": _fp16_plan,
}


def _check_request(precision: str, batch_range: tuple[int, int, int], resolution: int) -> None:
    if precision not in _PRECISIONS:
        raise ExportError(
            f"TensorRT precision {precision!r} is unknown; expected one of {sorted(_PRECISIONS)}"
        )
    low, opt, high = batch_range
    if not 1 <= low <= opt <= high or resolution < 1:
        raise ExportError(
            f"TensorRT batch range {batch_range} at resolution {resolution} is invalid; "
            "expected 1 <= min <= opt <= max and a positive resolution, e.g. (1, 8, 32)"
        )


def build_engine(
    onnx_path: Path,
    out_dir: Path,
    *,
    precision: str = "fp32",
    batch_range: tuple[int, int, int] = (1, 8, 32),
    resolution: int,
    workspace_mb: int = 1024,
    timing_cache_path: Path | None = None,
) -> EngineFiles:
    """Build ``<out_dir>/<onnx stem>.<precision>.plan`` and its sidecar from ``onnx_path``.

    One optimisation profile covers batches ``batch_range`` = (min, opt, max); the timing
    cache at ``timing_cache_path`` is read when present and written back after the build.
    """
    _check_request(precision, batch_range, resolution)
    require_tensorrt()
    import tensorrt as trt

    platform = current_platform()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = _PRECISIONS[precision](Path(onnx_path), out_dir)

    builder = trt.Builder(tensorrt_logger())
    network, _parser = _parse(builder, prepared.onnx_path, strongly_typed=prepared.strongly_typed)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    for flag in prepared.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    shapes = tuple((b, 3, resolution, resolution) for b in batch_range)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *(trt.Dims(list(s)) for s in shapes))
    config.add_optimization_profile(profile)
    cache_bytes = (
        timing_cache_path.read_bytes() if timing_cache_path and timing_cache_path.is_file() else b""
    )
    if not config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False):
        raise ExportError(
            f"TensorRT refused the timing cache {timing_cache_path}; delete it and rebuild"
        )

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT failed to build {precision} engine from {onnx_path} (see the TensorRT "
            f"log above); try a larger workspace than {workspace_mb} MB or another precision"
        )
    plan_bytes = bytes(memoryview(serialized))
    if timing_cache_path is not None:
        timing_cache_path.parent.mkdir(parents=True, exist_ok=True)
        timing_cache_path.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    sidecar = EngineSidecar(
        tensorrt_version=platform.tensorrt_version,
        gpu_name=platform.gpu_name,
        compute_capability=platform.compute_capability,
        cuda_version=platform.cuda_version,
        precision=precision,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        resolution=resolution,
        min_shape=shapes[0],
        opt_shape=shapes[1],
        max_shape=shapes[2],
        plan_sha256=hashlib.sha256(plan_bytes).hexdigest(),
    )
    files = write_engine_files(
        plan_bytes, out_dir / f"{Path(onnx_path).stem}.{precision}.plan", sidecar
    )
    logger.info(
        "built TensorRT %s engine %s (%.1f kB)", precision, files.plan, len(plan_bytes) / 1e3
    )
    return files


def check_engine_parity(
    model: nn.Module,
    runner: TensorRTRunner,
    images: torch.Tensor,
    *,
    strict: bool = False,
) -> ParityReport:
    """Compare the engine with PyTorch under the gate for its precision (fp32 or fp16)."""
    gate = PARITY_GATES[runner.sidecar.precision]
    batch = runner.sidecar.max_shape[0]
    report = compare_logits(
        reference_logits(model, images, batch_size=batch),
        batched_logits(runner, images, batch_size=batch),
        min_top1_agreement=gate.min_top1_agreement,
        max_abs_diff=gate.max_abs_diff,
    )
    what = f"TensorRT {runner.sidecar.precision} engine {runner.plan_path}"
    return require_parity(report, what) if strict else report
