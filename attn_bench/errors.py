"""Errors that mean "the user asked for something that cannot work".

The CLI prints these as one line and exits non-zero; any other exception is a
real crash and keeps its traceback.
"""


class ConfigError(ValueError):
    """A user-facing configuration mistake (bad name, bad value, missing data)."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
