"""A search's live progress: each trial's state and ETA, and the study's (`vitamin-nas status` from another shell, and
the search driver's periodic table), read from its results database and its driver's heartbeat record."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from nas import heartbeat, status
from nas.run_dir import RunDir
from nas.tables import format_duration, format_table, headers, rows

if TYPE_CHECKING:
    from nas.results import ResultStore

#: `budget` is the rung's, as the leaderboard shows it (the samples seen there overshoot it by under a batch).
PROGRESS_COLUMNS = ("trial", "arch", "status", "rung", "budget", "wall", "eta")
#: A running trial silent this long (no row update, no file written by its training) is named in the summary: a
#: stalled data source shows here before `data.timeout` fails it.
SILENT_S = 60.0


def progress(store: ResultStore, now: float | None = None) -> tuple[list[dict[str, Any]], str]:
    """Each trial's state (running first, then the most recent first) and a one-line summary with the study's ETA.

    A trial's ETA extrapolates its wall time per sample seen to the end of its schedule (before its first rung,
    at the study's wall time per sample so far); the study's adds the trials not started yet, spread over the
    trials running at once: a study of listed candidates without early stopping knows their schedules (a run
    to 36k samples costs ten of one to 3.6k), at the study's wall time per sample so far; otherwise each at the
    mean wall time of the finished ones. Unknown (None) until there is a rate to use.
    """
    now = time.time() if now is None else now
    study = store.study()
    driver = heartbeat.read(store)
    stopped = driver is not None and not driver.alive(now)  # its running trials are cut off, not running
    max_budget = study.budget.max_samples
    objectives = study.objectives
    latest = {r["trial_id"]: r for r in store.rungs(latest=True)}
    records, running_left, finished_wall = [], [], []
    trials = store.trials()
    measured = [t for t in trials if t["wall_s"] and t["samples_seen"]]
    rate = sum(t["wall_s"] for t in measured) / sum(t["samples_seen"] for t in measured) if measured else None
    for trial in trials:
        rung = latest.get(trial["trial_id"])
        if stopped and trial["status"] in (status.PENDING, status.RUNNING):
            trial = {**trial, "status": status.INTERRUPTED}
        record = {"trial": trial["number"], "arch": trial["arch_name"], "status": trial["status"],
                  "rung": trial["rung"], "budget": trial["budget"], "samples_seen": trial["samples_seen"],
                  "wall": trial["wall_s"],
                  "eta": None, "host": trial["host"], "updated_at": trial["updated_at"] or trial["created_at"]}
        for name in objectives:
            record[name] = rung["metrics"].get(name, trial.get(name)) if rung else trial.get(name)
        end = trial["schedule"] or max_budget
        if trial["status"] == status.RUNNING and rung and end and trial["samples_seen"]:
            record["eta"] = trial["wall_s"] / trial["samples_seen"] * (end - trial["samples_seen"])
            running_left.append(record["eta"])
        elif trial["status"] == status.RUNNING:  # no rung yet
            started = trial["started_at"]
            record["eta"] = max(0.0, rate * end - (now - started)) if rate and end and started else None
            running_left.append(record["eta"])
        elif trial["status"] in status.FINAL and trial["wall_s"]:
            finished_wall.append(trial["wall_s"])
        records.append(record)
    records.sort(key=lambda r: (r["status"] != status.RUNNING, -r["updated_at"]))
    counts = {s: sum(r["status"] == s for r in records) for s in status.ALL}
    ends = [s for s in status.FINAL if s != status.INTERRUPTED]  # an interrupted trial is resumed, not finished
    finished = sum(counts[s] for s in ends)
    total = study.trials + study.confirm.runs  # the search's trials and its finalists' runs
    ended = ", ".join(f"{counts[s]} {s.replace('_', ' ')}" for s in ends if counts[s])
    summary = (f"{study.name}: {finished}/{total} trials finished" + (f" ({ended})" if ended else "")
               + (f", {counts[status.INTERRUPTED]} interrupted" if counts[status.INTERRUPTED] else "")
               + f", {counts[status.RUNNING]} running"
               + (f", {counts[status.PENDING]} pending" if counts[status.PENDING] else ""))
    if study.archs and study.budget.early_stopping == "none":  # the runs not started yet, by their schedules
        planned = sum(study.budget.schedules[b] for _, b, _ in study.runs)
        left = max(0, planned - sum(t["schedule"] or max_budget for t in trials if t["status"] != status.PENDING))
        waiting = rate * left if left and rate else (None if left else 0.0)
    else:  # each trial not started yet at the mean wall time of the finished ones
        left = max(0, total - finished - counts[status.RUNNING])
        waiting = left * sum(finished_wall) / len(finished_wall) if left and finished_wall else (None if left else 0.0)
    eta = (None if waiting is None or None in running_left
           else (sum(running_left) + waiting) / max(1, counts[status.RUNNING]))
    if eta is not None and not stopped:
        summary += f", ETA ~{format_duration(eta)}"
    silent = {} if stopped else _silent(store, [t for t in trials if t["status"] == status.RUNNING], now)
    if silent:
        summary += "; no progress for " + ", ".join(f"{format_duration(s)} (trial {n})" for n, s in silent.items())
    if driver is not None:
        summary += f"; {driver.describe(now)}"
    return records, summary


def _silent(store: ResultStore, running: list[dict[str, Any]], now: float) -> dict[int, float]:
    """Running trials (by number) with no sign of progress for `SILENT_S` or more: seconds since the last."""
    run_dir = RunDir(store.path.parent)
    found = {}
    for trial in running:
        last = max(t for t in (trial["updated_at"], trial["started_at"], run_dir.last_written(trial["trial_id"]))
                   if t is not None)
        if now - last >= SILENT_S:
            found[trial["number"]] = now - last
    return found


def progress_report(store: ResultStore, limit: int = 20) -> str:
    """The live table of a search (`vitamin-nas status` prints the same from another shell)."""
    records, summary = progress(store)
    rungs = len(store.study().budget.rungs)
    objectives = [name for name in store.objectives if name not in PROGRESS_COLUMNS]
    columns = [*PROGRESS_COLUMNS[:5], *objectives, *PROGRESS_COLUMNS[5:]]
    shown = sorted(records[:limit], key=lambda r: (r["status"] != status.RUNNING, r["trial"] is None, r["trial"] or 0))
    for record in shown:  # the running and the most recent trials, in the order of their numbers
        if record["rung"] is not None:
            record["rung"] = f"{record['rung'] + 1}/{rungs}"
    table = format_table(headers(columns), rows(shown, columns))
    statuses = [r["status"] for r in records]  # the statuses the did-not-learn rate judges, as in the database
    note = ""
    if status.DID_NOT_LEARN in statuses:  # only then: its interval needs scipy, a second of `status`'s start
        from nas.learning import failure_rate

        note = f"\n{failure_rate(statuses).line()}"
    return f"\n[{time.strftime('%H:%M:%S')}] {summary}\n{table}{note}"
