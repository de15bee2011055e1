"""Latency harness: one model, several backends, devices and batch sizes.

Backends (the table in :mod:`pipeline.backends`, built here into :data:`BACKENDS`, one
builder per runtime): PyTorch eager under ``torch.inference_mode`` (plain,
fp16 autocast, channels_last, both), ONNX Runtime (CPU execution provider; CUDA provider
when the installed onnxruntime has it) and TensorRT (when ``export.tensorrt_runtime`` says it
is usable). Devices: ``cpu`` (thread count set for the measurement, recorded, then
restored) and ``cuda``. Every figure comes from :func:`dha_train.timing.time_callable`
(warm-up, then a loop bounded by count and time; CUDA events and synchronisation for the
torch backends). A combination that cannot run here is reported as ``skipped`` with the
reason, one that breaks as ``failed`` with the error; neither stops the others.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import logging
import platform
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dha_train.errors import ConfigError, check_choice
from dha_train.timing import TimingStats, time_callable
from pipeline.backends import BACKEND_SPECS, BackendSpec

__all__ = [
    "BACKENDS",
    "DEFAULT_TIMING",
    "DEVICES",
    "BackendUnavailable",
    "LatencyConfig",
    "LatencyResult",
    "describe_environment",
    "measure_latency",
    "validate_choices",
]

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")


class BackendUnavailable(Exception):
    """A backend/device combination that cannot run on this machine (reported, not raised)."""


@dataclass(frozen=True)
class LatencyConfig:
    """How long to time each (backend, device, batch) combination."""

    warmup: int = 5
    min_iters: int = 10
    max_iters: int = 1000
    max_seconds: float = 2.0


DEFAULT_TIMING = LatencyConfig()


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one (backend, device, batch size) combination."""

    backend: str
    device: str
    batch_size: int
    status: str  # "ok" | "skipped" | "failed"
    reason: str = ""
    timing: TimingStats | None = None
    threads: int | None = None  # CPU threads used (torch intra-op / ORT intra_op_num_threads)

    @property
    def key(self) -> str:
        """Stable identifier, e.g. ``torch.cpu.bs1`` (used in metric names)."""
        return f"{self.backend}.{self.device}.bs{self.batch_size}"

    @property
    def throughput_ips(self) -> float | None:
        """Images per second at the median latency."""
        if self.timing is None or self.timing.median_ms <= 0:
            return None
        return self.batch_size * 1000.0 / self.timing.median_ms

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backend": self.backend,
            "device": self.device,
            "batch_size": self.batch_size,
            "status": self.status,
            "reason": self.reason,
            "threads": self.threads,
        }
        out.update(self.timing.to_dict() if self.timing else {})
        out["throughput_ips"] = self.throughput_ips
        return out


@dataclass
class _Job:
    """What a backend needs to build one timed callable."""

    model: nn.Module  # CPU, eval mode; backends copy it before moving it
    device: str
    batch_size: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    threads: int | None
    workdir: Path
    exports: dict[str, Path] = field(default_factory=dict)  # shared by the jobs of one model

    def onnx_path(self) -> Path:
        """The model exported to ONNX with a dynamic batch axis (once per model)."""
        if "onnx" not in self.exports:
            from export.onnx_export import export_onnx  # heavy (onnx), only where needed

            path = self.workdir / "model.onnx"
            self.exports["onnx"] = export_onnx(
                self.model, resolution=self.input_shape[-1], path=path
            )
        return self.exports["onnx"]


# A backend turns a job into (callable to time, device whose clock times it).
Backend = Callable[[_Job], tuple[Callable[[], object], str]]


def _need_cuda(job: _Job) -> None:
    if job.device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("CUDA is not available (torch.cuda.is_available() is False)")


def _torch_backend(spec: BackendSpec) -> Backend:
    """PyTorch eager; ``fp16`` = fp16 autocast (CUDA only), ``channels_last`` = NHWC memory."""
    amp, channels_last = spec.fp16, spec.channels_last

    def build(job: _Job) -> tuple[Callable[[], object], str]:
        _need_cuda(job)
        if amp and job.device != "cuda":
            raise BackendUnavailable("fp16 autocast is measured on CUDA only")
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = copy.deepcopy(job.model).to(job.device).to(memory_format=fmt).eval()
        x = torch.rand(job.batch_size, *job.input_shape, device=job.device)
        x = x.contiguous(memory_format=fmt)
        dtype = torch.float16 if amp else None

        def run() -> object:
            with torch.inference_mode(), torch.autocast(job.device, dtype, enabled=amp):
                return model(x)

        return run, job.device

    return build


def _onnxruntime_backend(job: _Job) -> tuple[Callable[[], object], str]:
    import onnxruntime as ort

    provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[job.device]
    if provider not in ort.get_available_providers():
        raise BackendUnavailable(
            f"{provider} is not in this onnxruntime build ({ort.get_available_providers()});"
            " install onnxruntime-gpu in place of onnxruntime for CUDA"
        )
    options = ort.SessionOptions()
    # The same thread count as torch (the one recorded with the result).
    options.intra_op_num_threads = job.threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(job.onnx_path()), options, providers=[provider])
    x = np.random.default_rng(0).random((job.batch_size, *job.input_shape), dtype=np.float32)
    binding = session.io_binding()
    # Input placed on the device once, outputs left there: the loop times inference only,
    # like the torch backends (whose input already lives on the device).
    binding.bind_ortvalue_input(
        session.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(x, job.device, 0)
    )
    for output in session.get_outputs():
        binding.bind_output(output.name, job.device)

    def run() -> object:
        session.run_with_iobinding(binding)  # returns when the outputs are ready
        return binding

    return run, "cpu"  # synchronous call: wall clock is the right clock


def _tensorrt_backend(spec: BackendSpec) -> Backend:
    fp16 = spec.fp16

    def build(job: _Job) -> tuple[Callable[[], object], str]:
        if job.device != "cuda":
            raise BackendUnavailable("TensorRT runs on CUDA only")
        _need_cuda(job)
        from export.tensorrt_engine import build_engine
        from export.tensorrt_runtime import TensorRTRunner, tensorrt_status

        ok, reason = tensorrt_status()
        if not ok:
            raise BackendUnavailable(reason)
        precision = "fp16" if fp16 else "fp32"
        batch = job.batch_size
        files = build_engine(
            job.onnx_path(),
            job.workdir / f"tensorrt_bs{batch}",
            precision=precision,
            batch_range=(batch, batch, batch),  # one static-shape engine per batch size
            resolution=job.input_shape[-1],
            timing_cache_path=job.workdir / "tensorrt_timing.cache",
        )
        runner = TensorRTRunner(files.plan)
        x = np.random.default_rng(0).random((batch, *job.input_shape), dtype=np.float32)

        def run() -> object:
            # Deviation from the torch/ORT backends: TensorRTRunner takes host arrays, so this
            # figure includes the host-to-device copy of the input and the copy of the logits back.
            return runner(x)

        return run, "cpu"  # the runner synchronises its stream: wall clock is right

    return build


_RUNTIMES: dict[str, Callable[[BackendSpec], Backend]] = {
    "torch": _torch_backend,
    "onnxruntime": lambda _spec: _onnxruntime_backend,  # one way to run it
    "tensorrt": _tensorrt_backend,
}
BACKENDS: dict[str, Backend] = {
    name: _RUNTIMES[spec.runtime](spec) for name, spec in BACKEND_SPECS.items()
}


def validate_choices(given: Sequence[str], choices: Sequence[str], what: str) -> tuple[str, ...]:
    """Return ``given`` as a tuple, or raise :class:`ConfigError` naming the unknown entry."""
    return tuple(check_choice(name, choices, what) for name in given)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count for the block (``None`` keeps it); yield it."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _measure_one(job: _Job, backend: str, config: LatencyConfig) -> LatencyResult:
    def result(status: str, **extra: Any) -> LatencyResult:
        return LatencyResult(backend, job.device, job.batch_size, status, **extra)

    with _torch_threads(job.threads) as used_threads:
        threads = used_threads if job.device == "cpu" else None
        try:
            fn, clock = BACKENDS[backend](job)
            stats = time_callable(
                fn,
                device=clock,
                warmup=config.warmup,
                min_iters=config.min_iters,
                max_iters=config.max_iters,
                max_seconds=config.max_seconds,
            )
        except BackendUnavailable as exc:
            log.info("latency %s.%s skipped: %s", backend, job.device, exc)
            return result("skipped", reason=str(exc))
        except ImportError as exc:
            return result("skipped", reason=f"not importable: {exc}")
        except Exception as exc:  # a broken combination is reported; the others still run
            log.exception("latency %s.%s.bs%d failed", backend, job.device, job.batch_size)
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return result("failed", reason=reason, threads=threads)
    return result("ok", timing=stats, threads=threads)


def measure_latency(
    model: nn.Module,
    *,
    input_shape: tuple[int, int, int],
    backends: Sequence[str] = ("torch",),
    devices: Sequence[str] = ("cpu",),
    batch_sizes: Sequence[int] = (1, 8),
    threads: int | None = None,
    config: LatencyConfig = DEFAULT_TIMING,
) -> list[LatencyResult]:
    """Time ``model`` on every (backend, device, batch size) combination.

    ``input_shape`` is (C, H, W); ``threads`` sets the CPU thread count (``None`` keeps the
    process setting, which is recorded). The caller's model is not moved or modified.
    """
    validate_choices(backends, list(BACKENDS), "latency backend")
    validate_choices(devices, DEVICES, "device")
    for batch in batch_sizes:
        if int(batch) < 1:
            raise ConfigError(f"batch size {batch} is not positive; pass sizes >= 1")
    if not backends:
        return []
    cpu_model = copy.deepcopy(model).cpu().eval()
    results: list[LatencyResult] = []
    with tempfile.TemporaryDirectory(prefix="dha-latency-") as tmp:
        exports: dict[str, Path] = {}
        for device in devices:
            for batch in batch_sizes:
                job = _Job(cpu_model, device, int(batch), input_shape, threads, Path(tmp), exports)
                results.extend(_measure_one(job, backend, config) for backend in backends)
    return results


def _cpu_name() -> str:
    """CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_environment() -> dict[str, Any]:
    """Device names and library versions, recorded beside every latency figure."""
    import os

    cuda = torch.cuda.is_available()
    versions = {
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "tensorrt": _version("tensorrt") or _version("tensorrt-cu12") or _version("tensorrt-cu13"),
    }
    return {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }
