"""``"module:attribute"`` references, resolved on first use: registries name heavy code this
way, so that reading a registry (the CLI's choices, ``dha --help``) imports nothing heavy."""

from __future__ import annotations

import importlib
from typing import Any

from dha_train.errors import ConfigError

__all__ = ["resolve"]


def resolve(reference: str) -> Any:
    """The object ``reference`` ("package.module:name") names."""
    module, _, attr = reference.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load {reference!r} ({exc}); fix the registry entry") from None
