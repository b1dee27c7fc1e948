"""Errors that reach the user.

A `ConfigError` is bad input (a file, a field, a value): the CLI prints it and exits with code 2.
"""


class ConfigError(ValueError):
    """Bad user input. The message names the file and field and, where it helps, the allowed values."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        where = ": ".join(p for p in (source, field) if p)
        super().__init__(f"{where}: {message}" if where else message)
