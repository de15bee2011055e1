"""The latency backends as a table (light: no torch, onnxruntime or TensorRT import).

One entry per backend: the runtime that serves it and how it runs there (fp16, NHWC memory).
:mod:`pipeline.latency` turns each entry into a timed callable (one builder per runtime); the
CLI's ``backends`` help and :func:`parse_backends` read the table. Adding a backend of an
existing runtime is one entry; a new runtime is one entry here and one builder there.
"""

from __future__ import annotations

from dataclasses import dataclass

from dha_train.errors import check_choices

__all__ = ["BACKEND_SPECS", "BackendSpec", "parse_backends"]


@dataclass(frozen=True)
class BackendSpec:
    """A way of running a model that the latency harness times."""

    name: str
    runtime: str  # "torch" (eager), "onnxruntime" or "tensorrt"
    fp16: bool = False  # torch: fp16 autocast; TensorRT: an fp16 engine
    channels_last: bool = False  # torch: NHWC memory format


BACKEND_SPECS: dict[str, BackendSpec] = {
    b.name: b
    for b in [
        BackendSpec("torch", "torch"),
        BackendSpec("torch_fp16", "torch", fp16=True),
        BackendSpec("torch_channels_last", "torch", channels_last=True),
        BackendSpec("torch_fp16_channels_last", "torch", fp16=True, channels_last=True),
        BackendSpec("onnxruntime", "onnxruntime"),
        BackendSpec("tensorrt", "tensorrt"),
        BackendSpec("tensorrt_fp16", "tensorrt", fp16=True),
    ]
}


def parse_backends(raw: str) -> tuple[str, ...]:
    """'torch,onnxruntime' -> ('torch', 'onnxruntime'), each checked against the table ('' =
    no timing)."""
    return check_choices(raw, list(BACKEND_SPECS), "backend")
