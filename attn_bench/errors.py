"""Errors that mean "the user asked for something that cannot work", and how they are shown.

The CLI prints these as one line and exits with :data:`USAGE_EXIT`; any other exception is a
real crash and keeps its traceback. Every layer raises :class:`ConfigError`; only the commands
call :func:`fail`.
"""
from __future__ import annotations

import math

USAGE_EXIT = 2


class ConfigError(ValueError):
    """A user-facing configuration mistake (bad name, bad value, missing data)."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def fail(message: str) -> int:
    """Print ``message`` as the one error line on stderr; returns the exit status to use."""
    from rich.console import Console

    from rich.markup import escape

    # escaped: a message naming e.g. 'attn-bench[viz]' must not lose '[viz]' as a style tag
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]attn-bench: error:[/] {escape(message)}")
    return USAGE_EXIT


def check_number(value, key: str, integer: bool = False) -> None:
    """``key`` must hold a finite number (an integer with ``integer``); booleans are not numbers here."""
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    check(ok, f"{key} must be {'an integer' if integer else 'a number'}, got {value!r}")
    check(math.isfinite(value), f"{key} must be a finite number, got {value!r}")
