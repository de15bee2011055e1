"""ONNX -> TensorRT plan (TensorRT 10 and 11), and a runner that checks the sidecar first.

Precision: fp32 builds with TF32 off (the fp32 parity gate is 1e-3). fp16 uses the
builder's FP16 flag where it exists (TensorRT 10); TensorRT 11 removed it and builds
strongly typed networks only, so there fp16 means an fp16 ONNX graph with fp32 inputs and
outputs (:func:`fp16_onnx`). TensorRT and CUDA are imported inside functions; GPU memory
is held in torch CUDA tensors.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from dha_train.nas.latency_runtimes import import_tensorrt
from export.engine_sidecar import (
    EngineFiles,
    EngineSidecar,
    PlatformInfo,
    read_sidecar,
    validate_sidecar,
    write_engine_files,
)
from export.errors import EngineMismatchError, ExportError, TensorRTUnavailableError
from export.onnx_export import INPUT_NAME, OUTPUT_NAME
from export.parity import (
    PARITY_GATES,
    ParityReport,
    batched_logits,
    compare_logits,
    reference_logits,
    require_parity,
)

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = [
    "tensorrt_status",
    "require_tensorrt",
    "current_platform",
    "fp16_onnx",
    "build_engine",
    "TensorRTRunner",
    "check_engine_parity",
]

logger = logging.getLogger(__name__)


def tensorrt_status() -> tuple[bool, str]:
    """(available, reason): whether engines can be built and run here, and why (not)."""
    module, reason = import_tensorrt()
    if module is None:
        return False, reason
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return True, f"TensorRT {module.__version__} on {torch.cuda.get_device_name()}"


def require_tensorrt() -> None:
    """Raise :class:`TensorRTUnavailableError` saying why TensorRT cannot be used here."""
    ok, reason = tensorrt_status()
    if not ok:
        raise TensorRTUnavailableError(
            f"TensorRT engines need TensorRT 10/11 and a CUDA GPU, but here: {reason}; "
            "install the 'tensorrt' extra on a CUDA machine or drop tensorrt from formats"
        )


def current_platform() -> PlatformInfo:
    """TensorRT version, GPU name, compute capability and CUDA version of this machine."""
    require_tensorrt()
    import tensorrt as trt

    major, minor = torch.cuda.get_device_capability()
    return PlatformInfo(
        tensorrt_version=str(trt.__version__),
        gpu_name=torch.cuda.get_device_name(),
        compute_capability=f"{major}.{minor}",
        cuda_version=str(torch.version.cuda),
    )


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


def _trt_logger() -> trt.Logger:
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


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

    builder = trt.Builder(_trt_logger())
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


class TensorRTRunner:
    """Loads a plan after checking its sidecar, and runs ``(N, 3, R, R)`` float32 batches.

    Batches larger than the profile's maximum are split; each call synchronises its stream.
    """

    def __init__(self, plan_path: Path, *, sidecar_path: Path | None = None) -> None:
        self.plan_path = Path(plan_path)
        self.sidecar = read_sidecar(self.plan_path, sidecar_path)
        require_tensorrt()
        import tensorrt as trt

        validate_sidecar(self.plan_path, self.sidecar, current_platform())
        self._runtime = trt.Runtime(_trt_logger())
        self._engine = self._runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self._engine is None:
            raise EngineMismatchError(
                f"TensorRT could not deserialise {self.plan_path} although its sidecar matches "
                "this machine; rebuild the engine"
            )
        self._check_io(trt)
        self._context = self._engine.create_execution_context()
        self._device = torch.device("cuda", torch.cuda.current_device())
        self._stream = torch.cuda.Stream(self._device)  # its own stream, not the legacy default

    def _check_io(self, trt: ModuleType) -> None:
        """The engine's own I/O names and dtypes must be the sidecar's, float32 in and out."""
        engine, side = self._engine, self.sidecar
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        dtypes = {n: engine.get_tensor_dtype(n) for n in names}
        if inputs != [side.input_name] or outputs != [side.output_name]:
            raise EngineMismatchError(
                f"TensorRT engine {self.plan_path.name} has inputs {inputs} and outputs "
                f"{outputs}; its sidecar says {side.input_name!r} -> {side.output_name!r}; "
                "rebuild the engine with build_engine"
            )
        wrong = {n: str(d) for n, d in dtypes.items() if d != trt.DataType.FLOAT}
        if wrong:
            raise EngineMismatchError(
                f"TensorRT engine {self.plan_path.name} has non-float32 I/O {wrong}; expected "
                "float32 inputs and outputs (fp16 engines keep fp32 I/O); rebuild the engine"
            )

    def _check(self, ok: bool, call: str) -> None:
        if not ok:
            raise RuntimeError(f"TensorRT {call} returned False for {self.plan_path.name}")

    def _run_batch(self, batch: np.ndarray) -> np.ndarray:
        side = self.sidecar
        with torch.cuda.stream(self._stream):
            images = torch.from_numpy(batch).to(self._device, torch.float32).contiguous()
            shape = tuple(images.shape)
            self._check(self._context.set_input_shape(side.input_name, shape), "set_input_shape")
            dims = self._context.get_tensor_shape(side.output_name)
            out_shape = tuple(dims[i] for i in range(len(dims)))
            logits = torch.empty(out_shape, dtype=torch.float32, device=self._device)
            for name, tensor in ((side.input_name, images), (side.output_name, logits)):
                ok = self._context.set_tensor_address(name, tensor.data_ptr())
                self._check(ok, f"set_tensor_address({name!r})")
            ok = self._context.execute_async_v3(self._stream.cuda_stream)
            self._check(ok, "execute_async_v3")
        self._stream.synchronize()
        return logits.cpu().numpy()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Logits ``(N, classes)`` for float32 images ``(N, 3, R, R)`` in [0, 1]."""
        side = self.sidecar
        expected = tuple(side.min_shape[1:])
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise EngineMismatchError(
                f"TensorRT engine {self.plan_path.name} got input shaped {tuple(images.shape)}; "
                f"expected (N, {', '.join(map(str, expected))}); resize images to "
                f"{side.resolution}x{side.resolution}"
            )
        array = np.ascontiguousarray(images, dtype=np.float32)
        return batched_logits(
            self._run_batch, torch.from_numpy(array), batch_size=side.max_shape[0]
        )


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
