"""User-facing errors: each says what was given, what was expected and how to fix it.

The CLI prints ``error: <message>`` (one line) for any :class:`UserError` and exits with
status 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__ = [
    "UserError",
    "DatasetError",
    "BudgetError",
    "ConfigError",
    "DiskFullError",
    "check_choice",
    "check_choices",
]


class UserError(Exception):
    """Bad input from the user. The message is one line and says how to fix it."""


class ConfigError(UserError):
    """An unknown or out-of-range parameter."""


class DatasetError(UserError):
    """A dataset that is missing, empty or not in the expected layout."""


class BudgetError(UserError):
    """A resource budget that no architecture in the search space can meet."""


class DiskFullError(UserError):
    """A write failed with ENOSPC: the message names the file and what was kept."""


def check_choice(value: str, choices: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``choices``; else a ConfigError naming the closest match."""
    if value in choices:
        return value
    close = difflib.get_close_matches(value, list(choices), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown {what} {value!r}{hint}: choose one of {', '.join(choices)}")


def check_choices(raw: str, choices: Sequence[str], what: str) -> tuple[str, ...]:
    """A comma-separated list, ``'a, b'`` -> ``('a', 'b')`` (``''`` -> ``()``), each entry
    checked with :func:`check_choice`."""
    return tuple(check_choice(v.strip(), choices, what) for v in raw.split(",") if v.strip())
