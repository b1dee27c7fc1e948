"""The typed study: `Study` and its sections (`Budget`, `Repeats`, `Confirm`, `Proxy`, `Resources`, `Storage`,
`FailurePolicy`, `StandIn`, `StudyData`), each checked where it is made. `nas.study.reader` reads a file into one; the
package docstring gives the file format.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from nas.arch import Arch
from nas.data import Augment, DataSource, SynthConfig
from nas.errors import is_int, require, require_choice
from nas.jsonable import jsonable
from nas.presets import TextTower
from nas.space import SearchSpace
from nas.train_config import TrainConfig

EARLY_STOPPING = ("asha", "curve", "none")
SCHEDULES = ("shared", "per_budget")
#: Fields added after searches were stored: left out of the resolved form at their defaults, so that a search
#: begun before they existed still resumes (`--resume` compares resolved forms).
LATER_DEFAULTS = {"budget": {"between": 0, "below": 0}, "train": {"mask_ratio": 0.0, "pretrained": None}}
#: Train fields the study sets from elsewhere: the budget (samples, rungs) and data.workers.
DERIVED_TRAIN_FIELDS = {"samples": "budget (max_samples and the rungs)", "rungs": "budget (max_samples and the rungs)",
                        "workers": "data.workers"}



@dataclass(frozen=True)
class Budget:
    """ASHA's ladder in samples seen: min_samples x reduction_factor^k below max_samples, then max_samples.

    `schedule: shared` trains a candidate once, with one cosine schedule to max_samples, and measures it at
    every rung (what ASHA needs; the smaller budgets are then measured mid-schedule). `schedule: per_budget`
    trains every (candidate, budget) pair in a run of its own whose schedule ends at that budget, as data
    scaling laws are fitted (fixed and grid studies, without early stopping; trials = candidates x rungs).
    A rung is the index of a budget in `rungs`, the same for every trial of the study.

    `between` adds that many evaluations between each two budgets of the ladder, and `below` that many under
    its first, spaced geometrically (reduction_factor^(1 / (between + 1)) apart): learning curves to fit, and
    cheaper first rungs to measure the fidelity of. They are rungs like the others (every candidate is
    evaluated there); ASHA still decides only at the ladder's budgets.
    """

    min_samples: int
    max_samples: int
    reduction_factor: float = 3.0
    early_stopping: str = "asha"
    schedule: str = "shared"
    between: int = 0
    below: int = 0

    def __post_init__(self) -> None:
        require(is_int(self.min_samples, 1) and is_int(self.max_samples, 1)
                and self.min_samples <= self.max_samples, "",
                f"needs integers 0 < min_samples <= max_samples, got {self.min_samples} and {self.max_samples}")
        require(isinstance(self.reduction_factor, (int, float)) and not isinstance(self.reduction_factor, bool)
                and self.reduction_factor > 1, "reduction_factor", f"must be > 1, got {self.reduction_factor!r}")
        require_choice(self.early_stopping, EARLY_STOPPING, "early_stopping")
        require_choice(self.schedule, SCHEDULES, "schedule")
        require(not self.per_budget or self.early_stopping == "none", "schedule",
                "per_budget trains each budget in a run of its own: set early_stopping: none")
        for name in ("between", "below"):
            require(is_int(getattr(self, name)), name, f"must be an integer >= 0, got {getattr(self, name)!r}")

    @property
    def per_budget(self) -> bool:
        return self.schedule == "per_budget"

    @property
    def ladder(self) -> tuple[int, ...]:
        """Successive halving's budgets; ASHA decides at all but the last."""
        ladder, k = [], 0
        while (budget := int(round(self.min_samples * self.reduction_factor**k))) < self.max_samples:
            ladder.append(budget)
            k += 1
        return (*ladder, self.max_samples)

    @property
    def rungs(self) -> tuple[int, ...]:
        """The budgets at which every candidate is evaluated: the ladder, and `between` and `below` evaluations."""
        ladder = self.ladder
        step = self.reduction_factor ** (1 / (self.between + 1))
        points = [ladder[0] * step**-j for j in range(self.below, 0, -1)]
        for low, high in zip(ladder, ladder[1:]):
            points += [low * (high / low) ** (j / (self.between + 1)) for j in range(self.between + 1)]
        points.append(ladder[-1])
        return tuple(sorted({int(round(p)) for p in points if round(p) >= 1}))

    @property
    def schedules(self) -> tuple[int, ...]:
        """The budgets that training runs end at: every rung with `schedule: per_budget`, else max_samples."""
        return self.rungs if self.per_budget else (self.max_samples,)

    def measured_at(self, schedule: int) -> tuple[int, ...]:
        """The budgets a run whose schedule ends at `schedule` is measured at: every rung of a shared schedule,
        or only its own end."""
        return (schedule,) if self.per_budget else self.rungs

    def rung_of(self, budget: int) -> int:
        """The rung a budget stands for."""
        return self.rungs.index(budget)


@dataclass(frozen=True)
class Repeats:
    """Listed candidates trained again with other seeds (the weights' initialisation and the data order): the
    first `fraction` of them (at least one), once with each of `seeds`, beside their run with `train.seed`.

    What the spread between two seeds of one candidate measures is the run-to-run noise that a ranking of
    candidates has to beat. Each repeat is a trial of its own (`nas.search.protocol.Candidate.seed`).

    `not_learned: N` (any study, listed candidates or not): a run that did not learn (`nas.learning`) is trained
    again with the next seed no run of its candidate used, up to N times per candidate and schedule.
    """

    seeds: tuple[int, ...] = ()
    fraction: float = 1.0
    not_learned: int = 0

    def __post_init__(self) -> None:
        require(isinstance(self.seeds, (list, tuple)) and all(is_int(s) for s in self.seeds), "seeds",
                f"must be a list of integers >= 0, got {self.seeds!r}")
        object.__setattr__(self, "seeds", tuple(self.seeds))
        require(len(set(self.seeds)) == len(self.seeds), "seeds", f"lists a seed twice: {list(self.seeds)}")
        require(isinstance(self.fraction, (int, float)) and not isinstance(self.fraction, bool)
                and 0 < self.fraction <= 1, "fraction", f"must be in (0, 1], got {self.fraction!r}")
        require(is_int(self.not_learned), "not_learned",
                f"must be an integer >= 0 (reruns of a run that did not learn), got {self.not_learned!r}")

    def to_dict(self) -> dict[str, Any]:
        """The file form; `not_learned` only when set (a study stored before it existed reads back unchanged)."""
        values = dataclasses.asdict(self)
        if not self.not_learned:
            values.pop("not_learned")
        return values

    def count(self, candidates: int) -> int:
        """How many of `candidates` listed candidates are repeated (the first ones)."""
        return 0 if not self.seeds or not candidates else max(1, math.ceil(self.fraction * candidates - 1e-9))


@dataclass(frozen=True)
class Confirm:
    """Finalists confirmed after the search: the best `top` candidates at the full budget (by the study's first
    objective, seed 0's measurement) are trained again to the full budget with `seeds` more seeds each (the next
    ones no run of the study used), and the leaderboard, `select` and `export --best` then rank them by the mean
    over their seeds with its seed-level interval (`nas.seeds`). `top: 0` (the default) confirms nothing."""

    top: int = 0
    seeds: int = 1

    def __post_init__(self) -> None:
        require(is_int(self.top), "top", f"must be an integer >= 0 (finalists to confirm), got {self.top!r}")
        require(is_int(self.seeds, 1), "seeds", f"must be an integer >= 1 (seeds per finalist), got {self.seeds!r}")

    @property
    def runs(self) -> int:
        return self.top * self.seeds


@dataclass(frozen=True)
class Proxy:
    """Candidates screened by a trained supernet before they train: `supernet` is a run directory of `vitamin-nas
    supernet train --out` (relative to the study file), whose score of a candidate is its zero-shot top-1 with the
    weights it inherits, on the study's zero-shot set (`supernet_top1`, with its interval). `keep` is the fraction
    (0, 1] of candidates trained: a fixed or grid study trains its best-scored ceil(keep x n) candidates, best
    first, and tells Optuna the others as pruned; a sampled study draws ceil(1 / keep) proposals per trial and
    trains the best-scored one, the others passed over as pruned. Every candidate must be a subnet of the supernet.

    The score is the supernet's prediction, not a measurement: how well it ranks stand-alone training is what
    `vitamin-nas fidelity` measures (it ranks a study's stored scores against every rung)."""

    supernet: str
    keep: float = 1.0

    def __post_init__(self) -> None:
        require(isinstance(self.supernet, str) and bool(self.supernet), "supernet",
                f"must be the path of a supernet run (vitamin-nas supernet train --out), got {self.supernet!r}")
        require(isinstance(self.keep, (int, float)) and not isinstance(self.keep, bool) and 0 < self.keep <= 1,
                "keep", f"must be a fraction in (0, 1] of the candidates to train, got {self.keep!r}")

    def kept(self, candidates: int) -> int:
        """How many of `candidates` listed candidates train (at least one)."""
        return max(1, math.ceil(self.keep * candidates - 1e-9))

    @property
    def pool(self) -> int:
        """How many proposals a sampled study screens per trial that trains."""
        return math.ceil(1 / self.keep - 1e-9)


@dataclass(frozen=True)
class Resources:
    """One trial's share of the cluster, and how many trials run at once (None: as many as the cluster holds).

    With `workers: 1` (the default) a trial is one process with `cpus` CPUs and `gpus` GPUs; a fraction of a GPU
    (`gpus: 0.25`) lets four trials share one device, each capped to its share of the device's memory. With
    `workers: N > 1` a trial is a data-parallel Ray Train job of N processes (ranks), and `cpus`, `gpus` and
    `memory_gib` are each rank's: one whole GPU per rank (NCCL), or none (gloo on CPUs).

    `memory_gib` caps what a process may allocate: on a GPU, its share of the device's memory; on a CPU, the
    address space it may add to its worker, so that a candidate too big for the machine fails with `oom`
    instead of taking the node down. Ray also reserves it when placing trials, and each trial then runs in
    a fresh worker process.
    """

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gib: float | None = None
    concurrency: int | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        for name in ("cpus", "gpus"):
            value = getattr(self, name)
            require(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0, name,
                     f"must be a number >= 0, got {value!r}")
        require(self.cpus > 0 or self.gpus > 0, "cpus", "a trial needs some CPU or GPU")
        require(self.gpus <= 1 or self.gpus == int(self.gpus), "gpus", "above 1, GPUs per trial must be whole")
        require(self.memory_gib is None or (isinstance(self.memory_gib, (int, float)) and self.memory_gib > 0),
                "memory_gib", f"must be a positive number of GiB or null, got {self.memory_gib!r}")
        require(self.concurrency is None or is_int(self.concurrency, 1), "concurrency",
                f"must be an integer >= 1, got {self.concurrency!r}")
        require(is_int(self.workers, 1), "workers", f"must be an integer >= 1, got {self.workers!r}")
        require(self.workers == 1 or self.gpus in (0, 1), "gpus",
                f"with workers: {self.workers}, each worker is one rank on one whole GPU (NCCL cannot run two ranks "
                f"of a job on one device) or on CPUs only: 0 or 1, got {self.gpus!r}")

    @property
    def data_parallel(self) -> bool:
        """Whether a trial is a Ray Train job of several ranks (`nas.search.data_parallel`)."""
        return self.workers > 1

    @property
    def threads(self) -> int:
        """Torch threads of one trial process (of each rank): its whole CPUs (at least one)."""
        return max(1, int(self.cpus))

    @property
    def loader_workers(self) -> int:
        """Loader processes for the trial's CPU share: none below 3 CPUs (decoding in the training process costs
        less than a worker's start and memory there), else one per CPU beyond the training thread's, up to 8."""
        return 0 if self.cpus < 3 else min(8, int(self.cpus) - 1)

    def to_dict(self) -> dict[str, Any]:
        """The file form; `workers` only when a trial has several (a study stored before it existed reads back
        unchanged)."""
        values = dataclasses.asdict(self)
        if self.workers == 1:
            values.pop("workers")
        return values


@dataclass(frozen=True)
class Storage:
    """What a search keeps on disk beyond what resume needs. `keep: K` keeps the rung checkpoints of only the
    best K trials at each rung (by the study's first measured objective; with several objectives, the rung's
    Pareto front too); None keeps every rung's (`nas.search.retention`)."""

    keep: int | None = None

    def __post_init__(self) -> None:
        require(self.keep is None or is_int(self.keep, 1), "keep",
                f"must be an integer >= 1 (how many trials keep their rung checkpoints) or null, got {self.keep!r}")


@dataclass(frozen=True)
class FailurePolicy:
    """A trial whose worker dies or raises is retried from its last checkpoint up to `max_retries` times;
    out of memory is retried `oom_retries` times with half the micro-batch and twice the gradient
    accumulation (the same effective batch), then recorded as `oom`."""

    max_retries: int = 2
    oom_retries: int = 1

    def __post_init__(self) -> None:
        for name in ("max_retries", "oom_retries"):
            require(is_int(getattr(self, name)), name, f"must be an integer >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class StandIn:
    """A stand-in for training, to measure the search machinery at scale on one machine: with `seconds_per_rung`
    set, each trial sleeps that long per rung and reports a synthetic learning curve drawn per arch and seed
    (`nas.search.stand_in`), without torch; the driver, searcher, schedulers, recorder, ledger, database,
    checkpoint records and resume are the real ones. Its results measure no architecture."""

    seconds_per_rung: float | None = None

    def __post_init__(self) -> None:
        value = self.seconds_per_rung
        require(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0),
                "seconds_per_rung", f"must be a number of seconds >= 0 or null, got {value!r}")

    @property
    def active(self) -> bool:
        return self.seconds_per_rung is not None


@dataclass(frozen=True)
class StudyData:
    """Which data a study trains on (`source`) and evaluates on (local paths), and where synthetic data lives."""

    source: DataSource
    zeroshot: str | None = None
    retrieval: str | None = None
    synthetic: SynthConfig | None = None
    dir: str | None = None
    zeroshot_templates: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Study:
    """A validated study file. See the package docstring (`nas.study`) for the fields.

    `train` is the recipe as one run to the full budget trains it; `run_config` derives every other run.
    """

    name: str
    source: str
    space: SearchSpace
    data: StudyData
    train: TrainConfig
    objectives: dict[str, str]
    algorithm: str
    trials: int
    budget: Budget
    resources: Resources = field(default_factory=Resources)
    failures: FailurePolicy = field(default_factory=FailurePolicy)
    storage: Storage = field(default_factory=Storage)
    stand_in: StandIn = field(default_factory=StandIn)
    seed: int = 0
    archs: tuple[Arch, ...] = ()
    labels: tuple[str, ...] = ()  # one per arch when the study names its candidates
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sampler: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    repeats: Repeats = field(default_factory=Repeats)
    image_size: int | None = None  # the resolution every listed candidate is measured at (None: its own)
    confirm: Confirm = field(default_factory=Confirm)
    proxy: Proxy | None = None

    @property
    def text(self) -> TextTower:
        return self.space.text

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def label_of(self) -> dict[str, str]:
        """arch_id -> the label the study gave its candidate (`archs` as a mapping of label: arch)."""
        return {arch.arch_id: label for arch, label in zip(self.archs, self.labels)}

    @property
    def max_trials(self) -> int:
        """The most Ray Tune trials the search may start: the study's, its confirmations, and a rerun of each run
        that did not learn (`repeats.not_learned` times)."""
        return self.trials * (1 + self.repeats.not_learned) + self.confirm.runs * (1 + self.repeats.not_learned)

    @property
    def used_seeds(self) -> tuple[int, ...]:
        """The seeds the study's own runs train with: `train.seed` and the repeats'."""
        return (self.train.seed, *self.repeats.seeds)

    @property
    def runs(self) -> tuple[tuple[int, int, int | None], ...]:
        """What a study of listed candidates measures, in order: (candidate index, schedule index, seed), schedule
        by schedule, each candidate with the recipe's seed (None: `train.seed`) and then its repeats' seeds, so
        that any prefix of the runs measures its candidates with every seed (a table cut short is a complete
        table of fewer candidates)."""
        repeated = self.repeats.count(len(self.archs))
        return tuple((i, b, seed) for b in range(len(self.budget.schedules)) for i in range(len(self.archs))
                     for seed in (None, *(self.repeats.seeds if i < repeated else ())))

    def run_config(self, schedule: int | None = None, accum_freq: int | None = None,
                   seed: int | None = None) -> TrainConfig:
        """The trainer's config for one run: the recipe, its budget (`schedule`, one of `budget.schedules`;
        default the largest) with the rungs before its end, an OOM retry's accumulation, and a repeat's seed."""
        samples = schedule or self.budget.max_samples
        return dataclasses.replace(self.train, samples=samples, rungs=self.budget.measured_at(samples)[:-1],
                                   accum_freq=accum_freq or self.train.accum_freq,
                                   seed=self.train.seed if seed is None else seed)

    def resolved(self) -> dict[str, Any]:
        """The study in file form, with the space inlined and paths absolute: what defines its results.

        Stored in the results database; `--resume` refuses a study whose resolved form has changed, and
        `study_from_dict` (`nas.study.reader`) reads it back.
        """
        source = {f.name: getattr(self.data.source, f.name) for f in dataclasses.fields(DataSource)
                  if getattr(self.data.source, f.name) != f.default and f.name != "augment"}
        if self.data.source.augment != Augment():
            source["augment"] = dataclasses.asdict(self.data.source.augment)
        if self.data.synthetic is not None:
            source.pop("urls")
        data = {**source, "zeroshot": self.data.zeroshot, "retrieval": self.data.retrieval,
                "workers": self.train.workers}
        if self.data.zeroshot_templates is not None:
            data["zeroshot_templates"] = list(self.data.zeroshot_templates)
        if self.data.synthetic is not None:
            data.update(synthetic=dataclasses.asdict(self.data.synthetic), dir=self.data.dir)
        train = {k: v for k, v in self.train.to_dict().items() if k not in DERIVED_TRAIN_FIELDS}
        budget = dataclasses.asdict(self.budget)
        for section, values in (("train", train), ("budget", budget)):
            for name, default in LATER_DEFAULTS[section].items():
                if values[name] == default:
                    del values[name]
        archs = [a.to_dict() for a in self.archs]
        return jsonable({
            "name": self.name, "description": self.description, "space": self.space.spec, "data": data,
            "train": train, "objectives": self.objectives, "algorithm": self.algorithm,
            **({"sampler": self.sampler} if self.sampler else {}),
            **({"archs": dict(zip(self.labels, archs)) if self.labels else archs} if self.archs else {}),
            **({"groups": self.groups} if self.groups else {}),
            "trials": len(self.archs) if self.archs else self.trials,
            "budget": budget, "resources": self.resources.to_dict(),
            **({"storage": dataclasses.asdict(self.storage)} if self.storage != Storage() else {}),
            **({"stand_in": dataclasses.asdict(self.stand_in)} if self.stand_in.active else {}),
            "seed": self.seed, "failures": dataclasses.asdict(self.failures),
            **({"repeats": self.repeats.to_dict()} if self.repeats != Repeats() else {}),
            **({"image_size": self.image_size} if self.image_size else {}),
            **({"confirm": dataclasses.asdict(self.confirm)} if self.confirm != Confirm() else {}),
            **({"proxy": dataclasses.asdict(self.proxy)} if self.proxy is not None else {})})
