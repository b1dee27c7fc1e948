"""Ends the Ray processes a search driver started when the driver ends, however it ends (SIGKILL included).

Ray ties its GCS and raylet to the driver (the kernel kills them with it), but the agents the raylet starts
wait for the GCS to answer before they exit: after a driver is killed they linger a minute or more. The driver
starts this script (standalone: the standard library only, no import of the package) with a pipe on its stdin
and the driver's pid; the script notes the driver's descendants (pid and start time) every second, and when the
pipe closes (the driver exited or was killed) it ends those still there: SIGTERM, then SIGKILL. A pid taken by
another process since is never touched (its start time differs).

    reaper = start(os.getpid())     # in the driver, before Ray starts
    ...
    stop(reaper)                    # after ray.shutdown(): ends what is left, then the reaper itself
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

SNAPSHOT_INTERVAL_S = 1.0
GRACE_S = 3.0


def start(driver_pid: int) -> subprocess.Popen:
    """The reaper of `driver_pid` (this process), in a session of its own so that a Ctrl-C does not reach it."""
    return subprocess.Popen([sys.executable, "-I", __file__, str(driver_pid)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(reaper: subprocess.Popen, timeout: float = GRACE_S + 10) -> None:
    """Close the pipe: the reaper ends what is left of the driver's processes and exits."""
    if reaper.stdin is not None:
        reaper.stdin.close()
    try:
        reaper.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        reaper.kill()


def descendants(pid: int) -> dict[int, str]:
    """Every descendant of `pid`, with its start time (field 22 of /proc/PID/stat)."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        started[int(entry.name)] = fields[19]
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = started[child]
            todo.append(child)
    return found


def end(processes: dict[int, str]) -> None:
    """SIGTERM the processes that are still the ones noted, then SIGKILL those left after `GRACE_S`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = [pid for pid, started in processes.items() if start_time(pid) == started]
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + GRACE_S
        while left and time.time() < deadline:
            left = [pid for pid in left if start_time(pid) == processes[pid]]
            time.sleep(0.1)


def start_time(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot); None once it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def main(driver_pid: int) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only the pipe ends the reaper: it outlives whatever ends the driver
    noted: dict[int, str] = {}
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], SNAPSHOT_INTERVAL_S)
        if readable and not os.read(sys.stdin.fileno(), 1024):
            break  # EOF: the driver closed the pipe or died
        noted.update(descendants(driver_pid))
        noted.pop(os.getpid(), None)
    end(noted)


if __name__ == "__main__":
    main(int(sys.argv[1]))
