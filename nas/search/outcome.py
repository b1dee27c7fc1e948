"""What a finished search amounts to: whether any trial produced a result, and why trials failed.

`vitamin-nas search` exits 1 when no trial measured anything (every trial failed, ran out of memory or
diverged before its first rung), and says how many trials failed when some did, each time with one line per
kind of error (most common first): how many trials it ended, its one-line form, and the log of one of them
(`RUN/trials/<trial>/error.log`, the whole traceback of every failed attempt: `nas.run_dir`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from nas import status
from nas.run_dir import RunDir


@dataclass(frozen=True)
class Outcome:
    """`trials` recorded, `measured` of them with at least one rung, `failed` of them ended `failed`, and each
    error's one-line form with how many trials ended with it and the error log of one of them, where one was
    written (most common first)."""

    trials: int
    measured: int
    failed: int
    errors: tuple[tuple[str, int, str | None], ...]

    @classmethod
    def of(cls, store: Any) -> Outcome:
        trials = store.trials()
        measured = {r["trial_id"] for r in store.rungs()}
        run_dir = RunDir(store.path.parent)
        ended = [t for t in trials if t["error"] and t["status"] != status.COMPLETED]
        errors = Counter(error_line(t["error"]) for t in ended)
        logs: dict[str, str] = {}
        for trial in ended:
            log = run_dir.error_log(trial["trial_id"])
            if log.is_file():
                logs.setdefault(error_line(trial["error"]), str(log))
        return cls(len(trials), len(measured & {t["trial_id"] for t in trials}),
                   sum(t["status"] == status.FAILED for t in trials),
                   tuple((line, count, logs.get(line)) for line, count in errors.most_common()))

    @property
    def produced_results(self) -> bool:
        return self.measured > 0

    def summary(self) -> str | None:
        """What went wrong (no result at all, or failed trials), else None: a line, then one per kind of error."""
        kinds = "".join(f"\n  {count}x {line}" + (f" (log: {log})" if log else "") for line, count, log in self.errors)
        if not self.produced_results:
            if not self.trials:
                return "no trial produced a result: no candidate was trained (every proposal was infeasible?)"
            return f"no trial produced a result ({self.trials} trial(s), {self.failed} failed){kinds}"
        if self.failed:
            return f"{self.failed} of {self.trials} trials failed{kinds}"
        return None


def error_line(error: str, limit: int = 300) -> str:
    """The line of an error text that says what happened: the exception line that ends a traceback."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    exceptions = [line for line in lines if not line.startswith(("File ", "^", "~", "Traceback"))]
    line = (exceptions or lines or [error.strip()])[-1]
    return line if len(line) <= limit else line[: limit - 3] + "..."
