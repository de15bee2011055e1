"""Running a TensorRT plan: the runner that checks the sidecar first, and this machine's
platform. No torch: device memory, copies and the stream come from NVIDIA's CUDA runtime
bindings (``cuda.bindings.runtime``, the ``cuda-bindings`` package), so the TensorRT
model's served code needs only TensorRT, cuda-bindings and numpy. TensorRT and CUDA are
imported inside functions; :mod:`export.tensorrt_engine` builds the plans.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from dha_train.tensorrt_import import import_tensorrt
from export.engine_sidecar import PlatformInfo, read_sidecar, validate_sidecar
from export.errors import EngineMismatchError, TensorRTUnavailableError
from export.serving import in_batches

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = [
    "tensorrt_status",
    "require_tensorrt",
    "current_platform",
    "tensorrt_logger",
    "TensorRTRunner",
]

logger = logging.getLogger(__name__)


def _cudart() -> ModuleType:
    from cuda.bindings import runtime

    return runtime


def _checked(result: Any, call: str) -> Any:
    """The value of a ``cuda.bindings`` call (which returns ``(error, *values)``)."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if error != _cudart().cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA {call} failed: {error}")
    return values[0] if values else None


def _gpu_count() -> tuple[int, str]:
    try:
        cudart = _cudart()
    except ImportError as exc:
        return 0, f"cuda-bindings not importable ({exc})"
    error, count = cudart.cudaGetDeviceCount()
    if error != cudart.cudaError_t.cudaSuccess or not count:
        return 0, "no CUDA device"
    return int(count), ""


def tensorrt_status() -> tuple[bool, str]:
    """(available, reason): whether engines can be built and run here, and why (not)."""
    module, reason = import_tensorrt()
    if module is None:
        return False, reason
    count, reason = _gpu_count()
    if not count:
        return False, reason
    return True, f"TensorRT {module.__version__} on {current_platform().gpu_name}"


def require_tensorrt() -> None:
    """Raise :class:`TensorRTUnavailableError` saying why TensorRT cannot be used here."""
    ok, reason = tensorrt_status()
    if not ok:
        raise TensorRTUnavailableError(
            f"TensorRT engines need TensorRT 10/11 and a CUDA GPU, but here: {reason}; "
            "install the 'tensorrt' extra on a CUDA machine or drop tensorrt from formats"
        )


def current_platform() -> PlatformInfo:
    """TensorRT version, GPU name, compute capability and CUDA runtime version here."""
    module, reason = import_tensorrt()
    if module is None:
        raise TensorRTUnavailableError(f"TensorRT is needed here, but {reason}")
    cudart = _cudart()
    props = _checked(
        cudart.cudaGetDeviceProperties(_checked(cudart.cudaGetDevice(), "cudaGetDevice")),
        "cudaGetDeviceProperties",
    )
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    runtime = int(_checked(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
    return PlatformInfo(
        tensorrt_version=str(module.__version__),
        gpu_name=name.rstrip("\x00"),
        compute_capability=f"{props.major}.{props.minor}",
        cuda_version=f"{runtime // 1000}.{runtime % 1000 // 10}",
    )


def tensorrt_logger() -> trt.Logger:
    """A TensorRT logger at WARNING."""
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


class TensorRTRunner:
    """Loads a plan after checking its sidecar, and runs ``(N, 3, R, R)`` float32 batches.

    One execution context, one CUDA stream and one pair of device buffers sized for the
    profile's largest batch; larger batches are split. A call is not thread-safe (the
    context holds one input shape and one set of addresses at a time): callers that share a
    runner take turns (:class:`export.tensorrt_served.ServedTensorRT` holds a lock).
    """

    def __init__(self, plan_path: Path, *, sidecar_path: Path | None = None) -> None:
        self.plan_path = Path(plan_path)
        self.sidecar = read_sidecar(self.plan_path, sidecar_path)
        require_tensorrt()
        import tensorrt as trt

        validate_sidecar(self.plan_path, self.sidecar, current_platform())
        self._runtime = trt.Runtime(tensorrt_logger())
        self._engine = self._runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self._engine is None:
            raise EngineMismatchError(
                f"TensorRT could not deserialise {self.plan_path} although its sidecar matches "
                "this machine; rebuild the engine"
            )
        self._check_io(trt)
        self._context = self._engine.create_execution_context()
        cudart = _cudart()
        side = self.sidecar
        self.num_classes = int(self._engine.get_tensor_shape(side.output_name)[-1])
        batch = side.max_shape[0]
        self._in_bytes = 4 * int(np.prod(side.max_shape))
        self._stream = _checked(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._inputs = int(_checked(cudart.cudaMalloc(self._in_bytes), "cudaMalloc"))
        self._outputs = int(_checked(cudart.cudaMalloc(4 * batch * self.num_classes), "cudaMalloc"))

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
        cudart, side, context = _cudart(), self.sidecar, self._context
        kind = cudart.cudaMemcpyKind
        self._check(context.set_input_shape(side.input_name, batch.shape), "set_input_shape")
        dims = context.get_tensor_shape(side.output_name)
        logits = np.empty(tuple(dims[i] for i in range(len(dims))), dtype=np.float32)
        for name, address in ((side.input_name, self._inputs), (side.output_name, self._outputs)):
            self._check(context.set_tensor_address(name, address), f"set_tensor_address({name!r})")
        copy_in = (self._inputs, batch.ctypes.data, batch.nbytes, kind.cudaMemcpyHostToDevice)
        _checked(cudart.cudaMemcpyAsync(*copy_in, self._stream), "cudaMemcpyAsync")
        self._check(context.execute_async_v3(int(self._stream)), "execute_async_v3")
        copy_out = (logits.ctypes.data, self._outputs, logits.nbytes, kind.cudaMemcpyDeviceToHost)
        _checked(cudart.cudaMemcpyAsync(*copy_out, self._stream), "cudaMemcpyAsync")
        _checked(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return logits

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
        array = np.asarray(images, dtype=np.float32)
        if not len(array):
            return np.zeros((0, self.num_classes), np.float32)
        return in_batches(self._run_batch, array, batch_size=side.max_shape[0])

    def __del__(self) -> None:
        """Give the device buffers and the stream back (nothing to do if loading failed)."""
        if not hasattr(self, "_outputs"):
            return
        cudart = _cudart()
        cudart.cudaFree(self._inputs)
        cudart.cudaFree(self._outputs)
        cudart.cudaStreamDestroy(self._stream)
