"""How a bad setting or input is reported: ConfigError, printed by the CLI as one line, and `require`."""
from __future__ import annotations


class ConfigError(ValueError):
    """A user mistake in the configuration or the command line; printed as one line."""


def require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)
