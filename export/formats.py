"""The deployment formats and what each needs (light: no torch, MLflow or TensorRT import).

The CLI's ``--formats`` and ``--precision`` choices and the registry's format check read
this table.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FORMATS", "FormatSpec", "PRECISIONS"]


@dataclass(frozen=True)
class FormatSpec:
    """A format the pipeline exports and registers."""

    name: str
    runtime: str  # what serves it
    needs: str  # what must be present to build and run it
    precisions: tuple[str, ...]  # the precisions it can be built in


FORMATS: dict[str, FormatSpec] = {
    f.name: f
    for f in [
        FormatSpec("onnx", "onnxruntime", "onnxruntime (CPU or CUDA provider)", ("fp32",)),
        FormatSpec("tensorrt", "tensorrt", "TensorRT 10/11 and a CUDA GPU", ("fp32", "fp16")),
    ]
}
# every precision some format can be built in (a format ignores the others)
PRECISIONS: tuple[str, ...] = tuple(
    dict.fromkeys(p for f in FORMATS.values() for p in f.precisions)
)
