"""A stand-in for training: a `Trial` that sleeps per rung and reports a synthetic learning curve, without torch.

A study with `stand_in: {seconds_per_rung: S}` (`nas.study.StandIn`) measures the search machinery, not the
archs: each trial waits S seconds per rung and reports what a law per arch gives at the rung's budget,

    loss(samples) = E + A * samples^-alpha,      zeroshot_top1 = exp(1 - loss),   top-k = 1 - (1 - top1)^k

with E, A and alpha drawn from the arch id and the run's seed (`StandInCurve.of`): the same candidate reports the
same curve in every session, so a resumed search continues the curve it began. The retrieval recalls follow
top-1 the same way. Everything else is the real trial's (`nas.search.trial.Trial`): the ledger's known results
replayed, the newest checkpoint of the trial or of the arch's furthest trial resumed from, each rung's
checkpoint kept in the run directory, the same report keys. The checkpoint is a small JSON record (where the
run stands and the rungs it reported) at the real one's path, written atomically as the trainer writes its own.

Nothing here imports torch, so that hundreds of stand-in trials run at once in small processes (with
`resources: {cpus: 0.01}`, as many as `concurrency` says on a few cores): `benchmarks/driver_scale.py`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.metrics import RETRIEVAL, ZEROSHOT, ZEROSHOT_KS
from nas.run_dir import CHECKPOINT
from nas.search.trial import Trial

#: What a stand-in checkpoint says it is (a real one holds `nas.train.checkpoint.CHECKPOINT_FORMAT`).
FORMAT = "stand-in"


@dataclass(frozen=True)
class StandInCurve:
    """loss = E + A * samples^-alpha: a saturating power law in samples seen, as CLIP's loss follows."""

    E: float
    A: float
    alpha: float

    @classmethod
    def of(cls, arch_id: str, seed: int) -> StandInCurve:
        """The arch's curve under a seed: E in [1, 2], alpha in [0.2, 0.5], and A putting the loss at 1,000 samples
        between E + 1 and E + 3, each from its own bytes of a hash of both."""
        digest = hashlib.sha256(f"{arch_id}:{seed}".encode()).digest()
        u = [int.from_bytes(digest[4 * i:4 * i + 4], "big") / 2**32 for i in range(3)]
        alpha = 0.2 + 0.3 * u[1]
        return cls(E=1.0 + u[0], A=(1.0 + 2.0 * u[2]) * 1000.0 ** alpha, alpha=alpha)

    def loss(self, samples: int) -> float:
        return self.E + self.A * max(samples, 1) ** -self.alpha

    def metrics(self, samples: int, evaluated: tuple[str, ...]) -> dict[str, float]:
        """The loss and the `evaluated` metrics at `samples`: top-1 = exp(1 - loss) (E is at least 1), each top-k
        or recall@k the chance of at least one hit in k tries at top-1's rate (retrieval at 0.8 of it)."""
        loss = self.loss(samples)
        top1 = math.exp(1.0 - loss)
        values = {"loss": loss}
        for name in evaluated:
            k = int(name.rsplit("@", 1)[-1]) if "@" in name else ZEROSHOT_KS[ZEROSHOT.index(name)]
            rate = top1 if name in ZEROSHOT else 0.8 * top1
            values[name] = 1.0 - (1.0 - rate) ** k
        return values


class StandInTrial(Trial):
    """A `Trial` whose training run is `StandInCurve` at `study.stand_in.seconds_per_rung` seconds a rung."""

    def _measure(self, furthest: dict[str, Any] | None) -> None:
        start = self._starting_point(furthest)
        rungs: list[dict[str, Any]] = []
        if start is not None:
            self.accum_freq = start.accum_freq
            self.resumed_from = start.samples_seen
            self._materialize(start)
            rungs = read_record(self.out)["rungs"]
            self._replay(rungs)
        config = self.study.run_config(self.schedule, self.accum_freq, self.candidate.seed)
        curve = StandInCurve.of(self.arch.arch_id, config.seed)
        data = self.study.data
        evaluated = (ZEROSHOT if data.zeroshot else ()) + (RETRIEVAL if data.retrieval else ())
        seconds = self.study.stand_in.seconds_per_rung
        for budget in (*config.rungs, config.samples):
            if budget <= (self.resumed_from or 0):
                continue
            time.sleep(seconds)
            metrics = {"budget": budget, "samples_seen": budget, "step": budget // config.batch_size,
                       **curve.metrics(budget, evaluated), "wall_s": seconds * (len(rungs) + 1), "train_s": seconds}
            rungs.append(metrics)
            write_record(self.out, {"format": FORMAT, "arch_id": self.arch.arch_id, "samples_seen": budget,
                                    "accum_freq": self.accum_freq, "rungs": rungs})
            self._report(metrics)

    @staticmethod
    def _progress(directory: Path) -> tuple[int, int] | None:
        if not (directory / CHECKPOINT).is_file():
            return None
        record = read_record(directory)
        return record["samples_seen"], record["accum_freq"]


def read_record(directory: Path) -> dict[str, Any]:
    """A stand-in checkpoint's record; a `ValueError` for a real checkpoint (a search cannot mix the two)."""
    with open(directory / CHECKPOINT, "rb") as file:
        head = file.read()
    try:
        record = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError):
        record = {}
    if record.get("format") != FORMAT:
        raise ValueError(f"{directory / CHECKPOINT} is not a stand-in's checkpoint")
    return record


def write_record(directory: Path, record: dict[str, Any]) -> None:
    """Write the record beside its final path, then rename it over it (a kept rung's hard link keeps the old)."""
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f".{CHECKPOINT}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(record))
    os.replace(temporary, directory / CHECKPOINT)
