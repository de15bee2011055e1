"""Deployable artifacts of a trained child network.

``wrap`` (the [0, 1]-input contract), ``onnx_export`` and ``parity`` (export and gates),
``tensorrt_engine``, ``tensorrt_runtime`` and ``engine_sidecar`` (TensorRT plans), ``flavors``
and ``tensorrt_flavor`` (MLflow models; ``serving``, ``tensorrt_served``: what they serve),
``registry`` (registration and aliases), ``inference`` (models:/ URI -> classifier).
Submodules are imported explicitly; importing ``export`` loads nothing heavy.
"""

from __future__ import annotations

__all__: list[str] = []
