"""Shard lists: what a stream reads, named the way webdataset and DataComp name it.

A source is a local directory (every `*.tar` in it, sorted), a local path or brace pattern
(`shards/{00000000..00001287}.tar`), an http(s) URL, or a `pipe:` command (how s3 and gcs are read:
`pipe:aws s3 cp s3://bucket/shards/00000000.tar -`, `pipe:gsutil cat gs://bucket/shards/00000000.tar`).
Several sources join with `::` or come as a list. Local paths are checked up front, because a typo in a
path should fail at once rather than as a stream of skipped shards; remote shards are checked when read.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

from webdataset.shardlists import expand_urls

from nas.errors import ConfigError

REMOTE_PREFIXES = ("http://", "https://", "pipe:", "s3://", "gs://", "gcs://", "hf://", "ais://")
"""Sources that are opened by webdataset's `gopen` and cannot be checked for existence cheaply."""

SIZES_FILE = "sizes.json"
"""DataComp's per-directory shard sizes: `{"00000000.tar": 9876, ...}`."""


def is_remote(url: str) -> bool:
    return url.startswith(REMOTE_PREFIXES)


def local_path(url: str) -> str:
    """The filesystem path of a local shard URL (`file:` prefix allowed, as webdataset allows it)."""
    return url.removeprefix("file://").removeprefix("file:")


def expand_shards(source: str | Sequence[str]) -> list[str]:
    """Every shard URL named by `source`, in order; a local path that does not exist is a `ConfigError`.

    Pipe commands are run by a shell when read: build them from trusted text only.
    """
    parts = [source] if isinstance(source, str) else list(source)
    if not parts:
        raise ConfigError("no shards given", field="urls")
    urls: list[str] = []
    missing: list[str] = []
    for part in parts:
        if not isinstance(part, str) or not part.strip():
            raise ConfigError(f"a shard source must be a non-empty string, got {part!r}", field="urls")
        for url in expand_urls(part):
            if is_remote(url) or Path(local_path(url)).is_file():
                urls.append(url)
            elif Path(local_path(url)).is_dir():
                urls.extend(_directory_shards(Path(local_path(url))))
            else:
                missing.append(local_path(url))
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise ConfigError(f"{len(missing)} of {len(urls) + len(missing)} shards not found (no such file or "
                          f"directory): {shown}", field="urls")
    return urls


def _directory_shards(path: Path) -> list[str]:
    tars = sorted(str(p) for p in path.glob("*.tar"))
    if not tars:
        raise ConfigError("directory holds no .tar shards", source=str(path))
    return tars


def select_shards(urls: Sequence[str], count: int | None, selection: str = "first", seed: int = 0) -> list[str]:
    """The first `count` shards, or a seeded random `count` of them (kept in their original order)."""
    if count is None:
        return list(urls)
    if count < 1:
        raise ConfigError(f"must be at least 1, got {count}", field="shards")
    if count > len(urls):
        raise ConfigError(f"asks for {count} shards but the source has {len(urls)}", field="shards")
    if selection == "first":
        return list(urls[:count])
    if selection == "random":
        chosen = sorted(random.Random(seed).sample(range(len(urls)), count))
        return [urls[i] for i in chosen]
    raise ConfigError(f"unknown selection {selection!r}; use 'first' or 'random'", field="shard_selection")


def dataset_size(urls: Sequence[str]) -> int | None:
    """Total samples of local shards from their directories' `sizes.json`; None when any is unknown.

    DataComp writes `sizes.json` next to the shards; uneven shards (failed downloads) are the norm, so
    the size is read, never guessed from a shard count.
    """
    sizes_by_dir: dict[str, dict[str, int]] = {}
    total = 0
    for url in urls:
        if is_remote(url):
            return None
        path = local_path(url)
        directory = os.path.dirname(path) or "."
        if directory not in sizes_by_dir:
            sizes_by_dir[directory] = _read_sizes(os.path.join(directory, SIZES_FILE))
        count = sizes_by_dir[directory].get(os.path.basename(path))
        if count is None:
            return None
        total += count
    return total


def _read_sizes(path: str) -> dict[str, int]:
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            sizes = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"unreadable: {err}", source=path) from err
    if not isinstance(sizes, dict) or not all(isinstance(v, int) for v in sizes.values()):
        raise ConfigError("must map shard file names to sample counts", source=path)
    return sizes
