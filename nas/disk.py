"""A full disk, told as one line: `DiskFull` names the path that could not be written and the free space left.

Each writer fails in its own words when its filesystem fills: `OSError` ENOSPC (or EDQUOT, a quota), SQLite's
"database or disk is full", torch's "unexpected pos" from a checkpoint cut short. `full_disk(err, path)` tells
them apart from other errors; the checkpoint writer (`nas.train.checkpoint`), the search driver and its Recorder
raise `DiskFull` instead, and the search ends with that line (its running trials `interrupted`, so that `--resume`
continues once space is freed).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

#: Words of the errors a full filesystem causes, in writers that do not raise ENOSPC itself.
FULL_DISK_WORDS = ("database or disk is full", "No space left on device", "Disk quota exceeded", "unexpected pos",
                   "file write failed")


class DiskFull(OSError):
    """A write failed because the filesystem holding `path` is full."""

    def __init__(self, path: str | os.PathLike, free: int | None = None):
        self.path = str(path)
        self.free = free_bytes(path) if free is None else free
        super().__init__(errno.ENOSPC, f"disk full: cannot write {self.path} ({self.free / 2**20:.1f} MB free on its "
                                       "filesystem); free space, then continue with --resume")

    @classmethod
    def told(cls, error: str, otherwise: str | os.PathLike) -> DiskFull:
        """The `DiskFull` an error's text tells of (a trial's, as Ray Tune reports it): the path it names, else
        `otherwise`, with the space free now."""
        named = re.search(r"disk full: cannot write (.+?) \(", error)
        return cls(named.group(1) if named else otherwise)

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self) -> tuple:  # raised in a trial's worker, rebuilt on the driver
        return type(self), (self.path, self.free)


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free to this user on the filesystem holding `path` (its nearest existing parent)."""
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    return shutil.disk_usage(where).free


def full_disk(err: BaseException | str) -> bool:
    """Whether `err` (an exception, or an error's text) says that a filesystem is full."""
    if isinstance(err, DiskFull) or (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)):
        return True
    text = err if isinstance(err, str) else str(err)
    return "disk full: cannot write" in text or any(words in text for words in FULL_DISK_WORDS)
