"""The driver session: what the search driver process holds while `nas.search.search` runs, and how it stops.

Ray Tune saves the `Recorder` callback and the `StudySearcher` with its experiment and unpickles them when a
search resumes, possibly from a run directory copied or moved elsewhere; neither stores a path or an actor name.
They take the results database, the run directory and the ledger's name from the session of the driver process
that runs them (`current()`), so that a resumed search writes where it runs, never where it ran before.

Stopping: the first SIGINT, SIGTERM or SIGHUP, or a broken output (its reader gone: `tee` ended by the same Ctrl-C,
`head`), asks Ray Tune to end the experiment cleanly (through its SIGUSR1 handler: the experiment state is saved,
the running trials are stopped and keep their last checkpoint, `Tuner.restore` continues them); the search then
raises `SearchInterrupted`. A second signal stops at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nas.run_dir import RunDir

if TYPE_CHECKING:
    from nas.results import ResultStore
    from nas.study import Study

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def say(text: str, file=None) -> bool:
    """Print `text` (to stdout by default); False when that output is a broken pipe, which is then pointed at
    /dev/null, so that no later print (nor Python's flush at exit) fails on it."""
    file = file or sys.stdout
    try:
        print(text, file=file, flush=True)
        return True
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), file.fileno())
        return False


class SearchInterrupted(Exception):
    """The search was stopped by a signal; its state is saved and `--resume` continues it."""

    def __init__(self, signal_name: str, interrupted: int):
        self.signal_name = signal_name
        self.interrupted = interrupted
        super().__init__(f"stopped by {signal_name} ({interrupted} running trial(s) interrupted)")


@dataclass
class DriverSession:
    """One run of the driver on a study's run directory. `ledger` names the session's ledger actor (a new name
    each session: nothing of an earlier session, or of another copy of the run, is looked up)."""

    study: Study
    run_dir: RunDir
    store: ResultStore | None = None
    ledger: str = field(default_factory=lambda: f"ledger-{uuid.uuid4().hex[:12]}")
    stop_signal: int | None = None
    failure: Exception | None = None

    @property
    def stopping(self) -> bool:
        return self.stop_signal is not None or self.failure is not None

    @property
    def stop_reason(self) -> str:
        """What stopped the search: the signal's name, or the failure (a full disk)."""
        return self.signal_name or str(self.failure or "")

    def fail(self, failure: Exception) -> None:
        """A fault no trial can get past (a full disk): stop as on a signal, running trials keeping their last
        checkpoint; the search then raises `failure`."""
        if self.stopping:
            return
        self.failure = failure
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if callable(tune_stop):
            tune_stop(signal.SIGUSR1, None)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.stop_signal).name if self.stop_signal else ""

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stopping:
            raise KeyboardInterrupt  # a second signal: stop now
        self.stop_signal = signum
        say(f"\n{signal.Signals(signum).name}: stopping the search; running trials keep their last checkpoint "
            "(send it again to stop at once)", sys.stderr)
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if callable(tune_stop):  # Ray Tune's handler, installed while an experiment runs: it stops cleanly
            tune_stop(signal.SIGUSR1, frame)
        else:  # no experiment running yet: nothing to save
            raise KeyboardInterrupt

    def output_broken(self) -> None:
        """The driver's output lost its reader: stop as on a signal (SIGPIPE's name, which Python ignores)."""
        if not self.stopping:
            self._on_signal(signal.SIGPIPE, None)

    @contextlib.contextmanager
    def catching_signals(self) -> Iterator[None]:
        """SIGINT, SIGTERM and SIGHUP handled by the session while the search runs (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        for s in STOP_SIGNALS:
            signal.signal(s, self._on_signal)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


_current: DriverSession | None = None


def current() -> DriverSession:
    """The session of the driver running in this process."""
    if _current is None:
        raise RuntimeError("no search driver runs in this process (nas.search.search starts one)")
    return _current


@contextlib.contextmanager
def running(session: DriverSession) -> Iterator[DriverSession]:
    global _current
    if _current is not None:
        raise RuntimeError("a search driver already runs in this process")
    _current = session
    try:
        yield session
    finally:
        _current = None
