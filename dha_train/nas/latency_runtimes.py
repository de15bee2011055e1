"""Latency runtimes: the programs the budgets' lookup table times a module with (a registry).

``max_latency_ms`` means the batch-1 latency of the *deployed* model, so the table is timed
with the runtime that serves it (:func:`deployment_runtime`): ONNX Runtime on the CPU;
TensorRT on CUDA when it is importable, else ONNX Runtime's CUDA provider. Eager PyTorch
(``torch``) stays as a reference (Table 5's eager column, tests).

- ``torch``: eager PyTorch under ``torch.inference_mode`` (CUDA events on CUDA).
- ``onnxruntime``: the module exported with ``torch.onnx.export`` (opset 17, dynamic batch
  axis, as the deployed file) to a temporary file, timed through :func:`ort_session`, the
  session settings the export step measures the deployed model with (CPU: intra-op threads
  = torch's, one inter-op thread; CUDA: the CUDA provider, then the CPU one).
- ``tensorrt``: a static batch-1 fp32 engine built from the same export, run on a torch
  CUDA stream with device buffers (CUDA only).

Every figure comes from :func:`dha_train.timing.time_callable`: :func:`time_calls` takes
the 10th percentile of a call's times in each of a few rounds that visit every module in
turn, and the least over the rounds, so that the slow spells of a shared machine do not
move a table entry. ONNX Runtime and TensorRT pay a fixed cost per call
(binding, thread-pool wake-up, launch, copies) that a whole network pays once, not once per
candidate: ``per_call_overhead`` tells :mod:`dha_train.nas.latency_table` to fit it.

This module imports neither ``export`` nor ``pipeline`` (the layering rule); the export
step's ONNX Runtime measurement calls :func:`ort_session` from here.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dha_train.errors import ConfigError, check_choice
from dha_train.tensorrt_import import import_tensorrt
from dha_train.timing import time_callable

__all__ = [
    "LatencyRuntime",
    "LATENCY_RUNTIMES",
    "RuntimeUnavailable",
    "latency_runtime",
    "deployment_runtime",
    "runtime_threads",
    "ort_session",
    "time_calls",
]

log = logging.getLogger(__name__)

Shape = tuple[int, ...]
Call = Callable[[], object]
_OPSET = 17
_INPUT = "x"


class RuntimeUnavailable(ConfigError):
    """A latency runtime that cannot run on this device here (says why and how to fix it)."""


@dataclass(frozen=True)
class LatencyRuntime:
    """One way to run a module: ``prepare(module, shape, device, workdir)`` returns the call
    to time; ``check(device)`` raises :class:`RuntimeUnavailable` when it cannot run."""

    name: str
    prepare: Callable[[nn.Module, Shape, torch.device, Path], Call]
    check: Callable[[torch.device], None]
    version: Callable[[], str]
    # time with CUDA events on CUDA (asynchronous eager torch) or the wall clock (calls
    # that return when their result is ready)
    device_clock: bool
    per_call_overhead: bool

    def tag(self, device: torch.device) -> str:
        """What a table timed with this runtime depends on: name, version, CPU threads."""
        threads = runtime_threads(device)
        suffix = "" if threads is None else f"-{threads}threads"
        return f"{self.name}-{self.version()}{suffix}"


def runtime_threads(device: torch.device) -> int | None:
    """CPU intra-op threads the runtimes use (torch's setting), None on CUDA."""
    return torch.get_num_threads() if device.type == "cpu" else None


# -- torch eager ---------------------------------------------------------------------------
def _torch_prepare(module: nn.Module, shape: Shape, device: torch.device, workdir: Path) -> Call:
    mod = copy.deepcopy(module).to(device).eval()
    x = torch.zeros(shape, device=device)

    def run() -> object:
        with torch.inference_mode():
            return mod(x)

    return run


def _torch_check(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeUnavailable("latency device cuda, but CUDA is not available here")


# -- ONNX Runtime --------------------------------------------------------------------------
def _export(module: nn.Module, shape: Shape, workdir: Path, *, dynamic_batch: bool) -> Path:
    """``module`` as an ONNX file under ``workdir`` (TorchScript exporter, as export does)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"module{len(list(workdir.glob('module*.onnx')))}.onnx"
    axes = {_INPUT: {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            copy.deepcopy(module).cpu().eval(),
            (torch.zeros(shape),),
            str(path),
            dynamo=False,
            opset_version=_OPSET,
            input_names=[_INPUT],
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    return path


def ort_session(
    onnx_path: Path, providers: list[str], threads: int | None = None
) -> tuple[Any, int | None]:  # (onnxruntime.InferenceSession, CPU threads used)
    """The ONNX Runtime session a deployed model is measured with: on the CPU provider,
    ``threads`` (default torch's) intra-op threads and one inter-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    used = None
    if providers[0] == "CPUExecutionProvider":
        used = threads or torch.get_num_threads()
        options.intra_op_num_threads = used
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), options, providers=providers), used


def _ort_providers(device: torch.device) -> list[str]:
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _ort_prepare(module: nn.Module, shape: Shape, device: torch.device, workdir: Path) -> Call:
    path = _export(module, shape, workdir, dynamic_batch=True)
    session, _ = ort_session(path, _ort_providers(device), runtime_threads(device))
    feed = {_INPUT: np.zeros(shape, dtype=np.float32)}
    return lambda: session.run(None, feed)


def _ort_check(device: torch.device) -> None:
    import onnxruntime as ort

    if device.type == "cuda" and (
        "CUDAExecutionProvider" not in ort.get_available_providers()
        or not torch.cuda.is_available()
    ):
        raise RuntimeUnavailable(
            "latency runtime onnxruntime on cuda needs ONNX Runtime's CUDAExecutionProvider "
            f"and a CUDA device (providers here: {ort.get_available_providers()}); install "
            "onnxruntime-gpu (pip install '.[gpu]') or use target_device=cpu"
        )


def _ort_version() -> str:
    import onnxruntime as ort

    return str(ort.__version__)


# -- TensorRT ------------------------------------------------------------------------------
def _tensorrt_check(device: torch.device) -> None:
    module, reason = import_tensorrt()
    ok = module is not None
    if ok and (device.type != "cuda" or not torch.cuda.is_available()):
        ok, reason = False, f"TensorRT runs on CUDA only (latency device {device})"
    if not ok:
        raise RuntimeUnavailable(f"latency runtime tensorrt: {reason}")


def _tensorrt_prepare(module: nn.Module, shape: Shape, device: torch.device, workdir: Path) -> Call:
    import tensorrt as trt

    path = _export(module, shape, workdir, dynamic_batch=False)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {path}: {errors}")
    plan = builder.build_serialized_network(network, builder.create_builder_config())
    if plan is None:
        raise RuntimeError(f"TensorRT could not build an engine for {path} (shape {shape})")
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    stream = torch.cuda.Stream(device)
    buffers = []  # kept alive with the call
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dims = tuple(context.get_tensor_shape(name))
        buf = torch.zeros(dims, dtype=torch.float32, device=device)
        if not context.set_tensor_address(name, buf.data_ptr()):
            raise RuntimeError(f"TensorRT refused the address of tensor {name!r}")
        buffers.append(buf)

    def run() -> object:
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        stream.synchronize()
        return buffers

    return run


def _tensorrt_version() -> str:
    module, _ = import_tensorrt()
    return "unavailable" if module is None else str(module.__version__)


LATENCY_RUNTIMES: dict[str, LatencyRuntime] = {
    "torch": LatencyRuntime(
        "torch", _torch_prepare, _torch_check, lambda: torch.__version__,
        device_clock=True, per_call_overhead=False,
    ),
    "onnxruntime": LatencyRuntime(
        "onnxruntime", _ort_prepare, _ort_check, _ort_version,
        device_clock=False, per_call_overhead=True,
    ),
    "tensorrt": LatencyRuntime(
        "tensorrt", _tensorrt_prepare, _tensorrt_check, _tensorrt_version,
        device_clock=False, per_call_overhead=True,
    ),
}  # fmt: skip


def latency_runtime(name: str) -> LatencyRuntime:
    """The registered runtime ``name`` (ConfigError naming the closest otherwise)."""
    return LATENCY_RUNTIMES[check_choice(name, list(LATENCY_RUNTIMES), "latency runtime")]


def deployment_runtime(device: str | torch.device) -> str:
    """The runtime the deployed model runs on ``device``: ONNX Runtime on the CPU; TensorRT
    on CUDA when it is importable, else ONNX Runtime (its CUDA provider)."""
    if torch.device(device).type == "cuda" and import_tensorrt()[0] is not None:
        return "tensorrt"
    return "onnxruntime"


def time_calls(
    runtime: LatencyRuntime,
    calls: Mapping[str, Call],
    device: torch.device,
    *,
    seconds: float,
    rounds: int = 3,
    min_iters: int = 10,
) -> dict[str, float]:
    """Latency (ms) of each prepared call: the 10th percentile of its calls within a round,
    the least over ``rounds`` rounds that visit every call in turn (``seconds`` per call in
    all). On a shared host the median of a 0.3 s window moved by 60% while the 10th
    percentile moved by 2%, and a slow spell must span every round to move an entry."""
    clock = device if runtime.device_clock else torch.device("cpu")
    best = {key: float("inf") for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            stats = time_callable(
                call, device=clock, warmup=3, min_iters=min_iters, max_iters=1_000_000,
                max_seconds=seconds / rounds,
            )  # fmt: skip
            best[key] = min(best[key], stats.p10_ms)
    return best
