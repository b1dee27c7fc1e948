"""Errors that reach the user.

A `ConfigError` is bad input (a file, a field, a value): the CLI prints it and exits with code 2.
"""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """Bad user input. The message names the file and field and, where it helps, the allowed values."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        where = ": ".join(p for p in (source, field) if p)
        super().__init__(f"{where}: {message}" if where else message)


def reject_unknown(values: Iterable[str], allowed: Iterable[str], *, source: str | None = None,
                   field: str | None = None) -> None:
    """A `ConfigError` naming every key of `values` not in `allowed`, and the allowed ones."""
    allowed = sorted(allowed)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}", source=source,
                          field=field)
