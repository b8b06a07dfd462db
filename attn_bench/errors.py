"""Errors that mean "the user asked for something that cannot work", and how they are shown.

The CLI prints these as one line and exits with :data:`USAGE_EXIT`; any other exception is a
real crash and keeps its traceback. Every layer raises :class:`ConfigError`; only the commands
call :func:`fail`.
"""
from __future__ import annotations

import argparse
import difflib
import math
import re

USAGE_EXIT = 2


class ConfigError(ValueError):
    """A user-facing configuration mistake (bad name, bad value, missing data)."""


class OneLineParser(argparse.ArgumentParser):
    """A subcommand's argument parser whose mistakes are one :class:`ConfigError` line
    (``<subcommand>: <message>``, exit 2), like every other user mistake, not argparse's usage block."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog.removeprefix('attn-bench ')}: {message}")

    def format_help(self) -> str:
        return plain_text(super().format_help())


def plain_text(text: str) -> str:
    """A docstring as a terminal shows it: ``code`` and :func:`name` without their reStructuredText marks."""
    return re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text).replace("``", "")


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def did_you_mean(word: str, choices, cutoff: float = 0.6, prefix: str = "") -> str:
    """``"did you mean 'X'? "`` for the choice closest to a mistyped ``word``, or ``""`` if none is close;
    ``prefix`` is shown before the match, not compared (a shared ``trainer.`` would make every key look close)."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f"did you mean '{prefix}{close[0]}'? " if close else ""


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
