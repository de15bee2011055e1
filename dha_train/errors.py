"""User-facing errors: each says what was given, what was expected and how to fix it.

The CLI prints ``error: <message>`` (one line) for any :class:`UserError` and exits with
status 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["UserError", "DatasetError", "BudgetError", "ConfigError"]


class UserError(Exception):
    """Bad input from the user. The message is one line and says how to fix it."""


class ConfigError(UserError):
    """An unknown or out-of-range parameter."""


class DatasetError(UserError):
    """A dataset that is missing, empty or not in the expected layout."""


class BudgetError(UserError):
    """A resource budget that no architecture in the search space can meet."""
