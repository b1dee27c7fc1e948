"""Whether a search's driver is alive: the record it keeps in its results database, and its heartbeat.

The driver writes a `DriverRecord` into `study.db` (`nas_meta`, key `driver`) when a search starts, refreshes
its `beat_at` every `INTERVAL_S` seconds from a thread, and writes how it ended: `finished`, `interrupted` (a
SIGINT or SIGTERM stopped it cleanly) or `failed`. A driver killed outright (SIGKILL, a lost node) writes
nothing more: readers (`vitamin-nas status`) see a record still `running` whose heartbeat has stopped, or whose
process is gone on this host, and report the search as stopped instead of running.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from nas import status
from nas.errors import ConfigError
from nas.results import FILENAME, ResultStore

KEY = "driver"
#: Seconds between two beats of a live driver.
INTERVAL_S = 5.0
#: A driver silent for this long is dead (six missed beats: a busy SQLite file delays a beat, never this long).
STALE_S = 30.0
RUNNING, INTERRUPTED, FAILED = status.RUNNING, status.INTERRUPTED, status.FAILED
FINISHED = "finished"
STATES = (RUNNING, FINISHED, INTERRUPTED, FAILED)


@dataclass(frozen=True)
class DriverRecord:
    """One driver session of a search: where it runs, its last beat, and how it ended (`reason`: the signal or
    error); `command` continues the search; `ray_temp` is the Ray temporary directory it made (removed at its
    end, or by the next session when it was killed)."""

    state: str
    pid: int
    host: str
    started_at: float
    beat_at: float
    ended_at: float | None = None
    reason: str | None = None
    command: str | None = None
    ray_temp: str | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DriverRecord:
        return cls(**{f.name: values.get(f.name) for f in fields(cls)})

    def alive(self, now: float | None = None) -> bool:
        """Running, beating, and (on this host) its process still there."""
        now = time.time() if now is None else now
        if self.state != RUNNING or now - self.beat_at > STALE_S:
            return False
        return self.host != socket.gethostname() or _process_alive(self.pid)

    def describe(self, now: float | None = None) -> str:
        """One line on the driver for `vitamin-nas status`."""
        now = time.time() if now is None else now
        resume = f"; resume with: {self.command}" if self.command else ""
        if self.alive(now):
            return f"driver running (pid {self.pid} on {self.host}, heartbeat {now - self.beat_at:.0f} s ago)"
        if self.state == FINISHED:
            return f"search finished at {_clock(self.ended_at)}"
        if self.state == INTERRUPTED:
            return f"driver stopped by {self.reason} at {_clock(self.ended_at)}{resume}"
        if self.state == FAILED:
            return f"driver failed at {_clock(self.ended_at)} ({self.reason}){resume}"
        return (f"driver gone (pid {self.pid} on {self.host}, last heartbeat {_clock(self.beat_at)}: killed?)"
                f"{resume}")


def read(store: ResultStore) -> DriverRecord | None:
    """The record of the search's latest driver session (None for a search that never had one)."""
    values = store.meta(KEY)
    return DriverRecord.from_dict(values) if values else None


def refuse_if_running(out: str | os.PathLike) -> DriverRecord | None:
    """A `ConfigError` when a live driver searches the run in `out` (saying how to watch it); else the record of
    its latest driver session (None without a database or a session).

    Reads through a read-only connection, closed before returning: a process that is refused never writes to
    the live driver's database, and never holds it while that driver runs (nas.results `_held`)."""
    if not (Path(out) / FILENAME).is_file():
        return None
    with contextlib.closing(ResultStore.open(out, readonly=True)) as store:
        record = read(store)
    if record is not None and record.alive():
        raise ConfigError(f"is being searched by a running driver (pid {record.pid} on {record.host}); watch it with "
                          f"`vitamin-nas status {out}`, or stop that driver (Ctrl-C or SIGTERM) before starting "
                          "another", source=str(out))
    return record


class Heartbeat:
    """Keeps a driver session's record in the database at `path` (`nas.results.ResultStore`'s file): written at
    `start`, its `beat_at` refreshed every `INTERVAL_S` by a thread with a connection of its own, ended by
    `end(state, reason)`."""

    def __init__(self, path: str | os.PathLike, command: str | None = None, ray_temp: str | None = None):
        self.path = Path(path)
        now = time.time()
        self.record = DriverRecord(RUNNING, os.getpid(), socket.gethostname(), now, now, command=command,
                                   ray_temp=ray_temp)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="vitamin-nas-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._write(self.record)
        self.thread.start()
        return self

    def end(self, state: str, reason: str | None = None) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(timeout=INTERVAL_S + 60)
        now = time.time()
        self.record = replace(self.record, state=state, reason=reason, beat_at=now, ended_at=now)
        self._write(self.record)

    def _beat(self) -> None:
        store = ResultStore(self.path)
        try:
            while not self.stopped.wait(INTERVAL_S):
                self.record = replace(self.record, beat_at=time.time())
                store.set_meta(KEY, asdict(self.record))
        finally:
            store.close()

    def _write(self, record: DriverRecord) -> None:
        store = ResultStore(self.path)
        try:
            store.set_meta(KEY, asdict(record))
        finally:
            store.close()


def _process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        try:  # no procfs (macOS): signal 0 tells whether the process exists
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state != "Z"


def _clock(when: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if when else "?"
