"""Errors that reach the user.

A `ConfigError` is bad input (a file, a field, a value): the CLI prints it and exits with code 2.
`load_yaml` reads the YAML files a user writes (studies, search spaces) and reports a syntax error, or a key given
twice in one mapping (which YAML would settle silently, keeping the last), as one.
`require`, `require_choice` and `require_int` are the checks a self-validating dataclass makes in `__post_init__`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


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


def require(ok: bool, field: str, message: str) -> None:
    """A `ConfigError` naming `field` with `message` unless `ok`: the check a self-validating dataclass makes."""
    if not ok:
        raise ConfigError(message, field=field)


def require_choice(value: Any, allowed: Iterable[str], field: str) -> None:
    """A `ConfigError` naming `field` and the allowed values unless `value` is one of them."""
    allowed = tuple(allowed)
    require(value in allowed, field, f"{value!r} is not one of {', '.join(allowed)}")


def is_int(value: Any, low: int = 0) -> bool:
    """Whether `value` is an integer (not a bool) of at least `low`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def require_int(value: Any, field: str, low: int) -> None:
    """A `ConfigError` naming `field` unless `value` is an integer (not a bool) of at least `low`."""
    if not is_int(value, low):
        raise ConfigError(f"must be an integer >= {low}, got {value!r}", field=field)


def load_yaml(path: str | os.PathLike) -> Any:
    """A YAML file's content; a file that does not parse is a `ConfigError` of one line naming the file, the line
    and column (1-based, as editors count) and PyYAML's problem, instead of PyYAML's multi-line caret text. A key
    given twice in a mapping is one too, naming both lines."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if isinstance(key, (str, int, float, bool)) and key in first:
                    raise ConfigError(f"given twice in one mapping (lines {first[key]} and {line}); YAML would keep "
                                      "only the last: remove one", source=str(path), field=str(key))
                if isinstance(key, (str, int, float, bool)):
                    first[key] = line
            return super().construct_mapping(node, deep=deep)

    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"not UTF-8 text (byte {err.start}); a YAML file is UTF-8", source=str(path)) from None
    except OSError as err:
        raise ConfigError(f"cannot be read: {err.strerror}", source=str(path)) from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = " ".join(str(err.problem or err.context or "syntax error").split())
        if err.context and err.problem:
            start = err.context_mark
            problem += f" ({err.context}" + (f" that starts at line {start.line + 1}, column {start.column + 1})"
                                             if start and start is not mark else ")")
        raise ConfigError(f"not valid YAML: {problem}", source=str(path), field=where) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML: {' '.join(str(err).split())}", source=str(path)) from None
