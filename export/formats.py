"""The deployment formats as a table (light: no torch, MLflow or TensorRT import).

One entry per format: its serving runtime, what it needs, its precisions and its builder
(``module:function``, imported when the format is exported; see
:mod:`export.format_builders`). The export step loops over the entries asked for; the CLI's
``--formats`` and ``--precision`` choices and the registry's format check read the table.
Adding a format is one entry and one builder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dha_train.lazy import resolve

__all__ = ["FORMATS", "FormatSpec", "PRECISIONS"]


@dataclass(frozen=True)
class FormatSpec:
    """A format the pipeline exports and registers."""

    name: str
    runtime: str  # what serves it
    needs: str  # what must be present to build and run it
    precisions: tuple[str, ...]  # the precisions it can be built in
    builder: str  # "module:function": ExportInputs -> Exported (or FormatUnavailable)

    def load_builder(self) -> Callable[[Any], Any]:
        return resolve(self.builder)


FORMATS: dict[str, FormatSpec] = {
    f.name: f
    for f in [
        FormatSpec(
            "onnx",
            "onnxruntime",
            "onnxruntime (CPU or CUDA provider)",
            ("fp32",),
            "export.format_builders:export_onnx_format",
        ),
        FormatSpec(
            "tensorrt",
            "tensorrt",
            "TensorRT 10/11 and a CUDA GPU",
            ("fp32", "fp16"),
            "export.format_builders:export_tensorrt",
        ),
    ]
}
# every precision some format can be built in (a format ignores the others)
PRECISIONS: tuple[str, ...] = tuple(
    dict.fromkeys(p for f in FORMATS.values() for p in f.precisions)
)
