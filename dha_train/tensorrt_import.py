"""The one check that TensorRT's real Python bindings (10.x or 11.x) are importable.

Plain Python, no torch: the latency runtimes use it, and so does the TensorRT model's served
code (:mod:`export.tensorrt_runtime`), which ships this file with the model.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

__all__ = ["SUPPORTED_TENSORRT_MAJORS", "import_tensorrt"]

SUPPORTED_TENSORRT_MAJORS = (10, 11)


def import_tensorrt() -> tuple[ModuleType | None, str]:
    """The real TensorRT bindings (10.x or 11.x), or None and why not (type stubs alone do
    not count)."""
    if importlib.util.find_spec("tensorrt") is None:
        return None, "tensorrt not importable"
    try:
        import tensorrt
    except Exception as exc:  # a broken install is a reason, not a crash
        return None, f"tensorrt does not import ({type(exc).__name__}: {exc})"
    if not hasattr(tensorrt, "Builder"):  # tensorrt-stubs alone leaves a namespace package
        return None, "tensorrt not importable (only type stubs are installed)"
    major = int(str(tensorrt.__version__).split(".")[0])
    if major not in SUPPORTED_TENSORRT_MAJORS:
        return None, f"TensorRT {tensorrt.__version__} is not supported (need 10.x or 11.x)"
    return tensorrt, ""
