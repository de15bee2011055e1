"""Errors raised by the export package (all are :class:`~dha_train.errors.UserError` kinds)."""

from __future__ import annotations

from dha_train.errors import UserError

__all__ = ["ExportError", "EngineMismatchError", "TensorRTUnavailableError", "RegistrationError"]


class ExportError(UserError):
    """An export that failed its checks (checker, parity gate): nothing gets registered."""


class EngineMismatchError(UserError):
    """A TensorRT plan whose sidecar disagrees with the file, the TensorRT version or the GPU."""


class TensorRTUnavailableError(UserError):
    """TensorRT or a CUDA device is needed but absent on this machine."""


class RegistrationError(UserError):
    """Bad input to model registration (tags, budgets, accuracy)."""
