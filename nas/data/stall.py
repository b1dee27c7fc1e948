"""A data source that stops sending: a shard's byte stream that waits at most `timeout` seconds for its next byte.

A `pipe:` command (how s3 and gcs are read) or a URL read through `curl` can stall without failing: a hung
connection, a credential prompt, `sleep`. Read as it is, such a shard blocks its trial for ever. `watched` gives
the reader instead a stream whose every read waits at most `timeout` seconds for data; past that it ends the
command (and what it started) and raises `DataStalled`, which fails the trial with one line, so that the study's
failure policy retries it or records it `failed`. Local files are read as they are: they never wait on a sender.
"""

from __future__ import annotations

import os
import select
import signal
from pathlib import Path
from typing import Any

#: The default of `data.timeout`: seconds without a byte from a shard's source before its trial fails.
DEFAULT_TIMEOUT_S = 600.0


class DataStalled(RuntimeError):
    """No byte arrived from a shard's source for `data.timeout` seconds (the trial fails with this one line).
    One argument, the message, as torch rebuilds an error raised in a DataLoader worker."""

    @classmethod
    def at(cls, url: str, timeout: float) -> DataStalled:
        return cls(f"data stalled: no data from {url} for {timeout:g} s (data.timeout)")


def watched(stream: Any, url: str, timeout: float | None) -> Any:
    """`stream` (what webdataset's `gopen` opened) as a reader that raises `DataStalled` after `timeout` seconds
    without data; a stream that is not a command's output (a local file), or no timeout, as it is."""
    process = getattr(stream, "proc", None)
    if timeout is None or process is None or process.stdout is None:
        return stream
    return _Watched(stream, url, timeout)


class _Watched:
    """A webdataset `Pipe` read straight from its file descriptor, each read waiting at most `timeout` seconds."""

    def __init__(self, pipe: Any, url: str, timeout: float):
        self.pipe, self.url, self.timeout = pipe, url, timeout
        self.fd = pipe.proc.stdout.fileno()

    def read(self, size: int = -1) -> bytes:
        chunks, count = [], 0
        while size < 0 or count < size:
            ready, _, _ = select.select([self.fd], [], [], self.timeout)
            if not ready:
                self.stop()
                raise DataStalled.at(self.url, self.timeout)
            chunk = os.read(self.fd, size - count if size >= 0 else 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            count += len(chunk)
        return b"".join(chunks)

    def stop(self) -> None:
        """End the command and every process it started (a shell does not pass a signal on to its children)."""
        for pid in [*_descendants(self.pipe.proc.pid), self.pipe.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.pipe.proc.wait()

    def close(self) -> None:
        self.pipe.close()  # the command's exit status, as the pipe reports it


def _descendants(pid: int) -> list[int]:
    """The processes under `pid` (Linux's /proc; none found elsewhere)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            children = [int(c) for c in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
        except OSError:
            continue
        found += children
        todo += children
    return found
