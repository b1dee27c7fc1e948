"""`jsonable(value)`: a value as JSON, YAML and torch's `weights_only` loading all take it, without importing torch.

A study's resolved form (`nas.study.Study.resolved`) and a training run's records and checkpoints hold tuples,
mappings and, from the trainer, tensors; each goes out through this one function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def jsonable(value: Any) -> Any:
    """Tuples as lists, mappings as dicts (their keys as they are: a space's `{64: [4, 6]}` stays so), a tensor or
    NumPy array as its number when it holds one, else as a (nested) list."""
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and hasattr(value, "reshape"):  # a tensor, or a NumPy array or scalar
        flat = value.reshape(-1).tolist()
        return flat[0] if len(flat) == 1 else value.tolist()
    return value
