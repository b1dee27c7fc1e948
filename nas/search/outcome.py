"""What a finished search amounts to, in one line: whether any trial produced a result, and why trials failed.

`vitamin-nas search` exits 1 when no trial measured anything (every trial failed, ran out of memory or
diverged before its first rung), and says how many trials failed when some did, each time with the most
common error in one line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from nas import status


@dataclass(frozen=True)
class Outcome:
    """`trials` recorded, `measured` of them with at least one rung, `failed` of them ended `failed`, and each
    error's one-line form with how many trials ended with it (most common first)."""

    trials: int
    measured: int
    failed: int
    errors: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, store: Any) -> Outcome:
        trials = store.trials()
        measured = {r["trial_id"] for r in store.rungs()}
        errors = Counter(error_line(t["error"]) for t in trials if t["error"] and t["status"] != status.COMPLETED)
        return cls(len(trials), len(measured & {t["trial_id"] for t in trials}),
                   sum(t["status"] == status.FAILED for t in trials), tuple(errors.most_common()))

    @property
    def produced_results(self) -> bool:
        return self.measured > 0

    def summary(self) -> str | None:
        """One line when something went wrong (no result at all, or failed trials), else None."""
        common = f"; most common error ({self.errors[0][1]}x): {self.errors[0][0]}" if self.errors else ""
        if not self.produced_results:
            if not self.trials:
                return "no trial produced a result: no candidate was trained (every proposal was infeasible?)"
            return f"no trial produced a result ({self.trials} trial(s), {self.failed} failed){common}"
        if self.failed:
            return f"{self.failed} of {self.trials} trials failed{common}"
        return None


def error_line(error: str, limit: int = 300) -> str:
    """The line of an error text that says what happened: the exception line that ends a traceback."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    exceptions = [line for line in lines if not line.startswith(("File ", "^", "~", "Traceback"))]
    line = (exceptions or lines or [error.strip()])[-1]
    return line if len(line) <= limit else line[: limit - 3] + "..."
