"""`Study`: what one search runs, read from a YAML file in `studies/` and checked before anything starts.

    name: quickstart
    space: ../search_spaces/tiny.yaml        # the search space (its text tower and constraints apply), the name
                                             # of a shipped one (tiny, vitamin: `vitamin-nas studies`), or inline
    data:
      synthetic: {samples: 12000, size: 64}  # or urls: shards (dir, brace pattern, URL, pipe:)
      dir: ../data/quickstart                # where the synthetic data lives (written when absent)
      zeroshot: ...                          # eval sets (default for synthetic: dir/eval/...)
      retrieval: ...
      zeroshot_templates: ["{}"]             # optional: the zero-shot prompts (default: the set's templates.txt)
      captions: "{color} {shape}"            # optional: caption each image from its metadata row (a template)
      workers: auto                          # loader workers per trial + any nas.data.DataSource field
    text: {width: 64, layers: 2, heads: 2, context_length: 32}   # or a preset name; default: the space's
    train: {batch_size: 64, lr: 0.001, warmup: 20}               # nas.train_config.TrainConfig fields
    objectives: {zeroshot_top1: max, image_gmacs: min}           # one, or several (a Pareto search)
    algorithm: tpe                           # tpe | nsga2 | random | grid | fixed (then archs: [...])
    archs: {ViTamin: ViTamin-S, ViT: ViT-S-16}   # fixed: a list, or a mapping that labels each candidate
    groups: {family: [ViTamin, ViT]}         # labelled candidates that a report compares with each other
    sampler: {n_startup_trials: 4}           # keyword arguments of the Optuna sampler
    trials: 12
    budget: {min_samples: 1500, max_samples: 13500, reduction_factor: 3}   # ASHA rungs in samples seen
                                             # (+ early_stopping: asha|curve|none, schedule: shared|per_budget,
                                             #  between: evaluations between rungs, below: under the first)
    constraints: {image_gmacs: {max: 0.05}}  # on top of the space's
    resources: {cpus: 1, gpus: 0, memory_gib: null, concurrency: 2}   # per trial; with workers: N, per worker
                                             # of a data-parallel trial (Ray Train); gpus: 0.25 packs 4 per GPU
    storage: {keep: 3}                       # optional: the rung checkpoints of only the best 3 at each rung
    seed: 0
    failures: {max_retries: 2, oom_retries: 1}
    repeats: {seeds: [1], fraction: 0.25}    # listed candidates: the first quarter again with train.seed 1
    image_size: 32                           # listed candidates: measured at this resolution (a fidelity axis)
    extends: quickstart.yaml                 # every field not given here is that study's (see below); a path
                                             # or the name of a shipped study

A study that `extends` another takes the other's fields in their resolved form: `data`, `train`, `budget`,
`resources` and `failures` are merged field by field (`budget: {early_stopping: none}` keeps the base's
ladder), except that a `data` naming its own data (urls, synthetic or dir) replaces the base's; every other
field given replaces the base's; the base's `sampler`, `archs`, `groups` and `trials` are dropped when the
study chooses another algorithm, and its `groups` and `trials` when the study lists its own `archs`; `name` and
`description` are never inherited. So a study that measures what another searches follows that study's recipe
as it changes, instead of a copy of its numbers.

Relative paths are relative to the study file, except the `data.dir` of a study installed with the package,
which lands under the current directory (`nas.shipped`). Every error names the file and the field, and the CLI exits
with code 2 on it. A `Study` is plain, typed data (picklable): Ray ships it to every trial. What one training
run of it needs is `study.run_config(schedule, accum_freq)`, derived from `study.train` in that one place.
`study.resolved()` is the study in file form (space inlined, paths absolute): stored in the results database,
it reads back with `Study.from_dict` (`nas.results.ResultStore.study()`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.arch import Arch
from nas.cost import COST_METRICS
from nas.data import Augment, DataSource, SynthConfig
from nas.data.prompts import check_templates
from nas.data.source import SETTINGS_FIELDS
from nas.errors import ConfigError, load_yaml, reject_unknown, require
from nas.jsonable import jsonable
from nas.metrics import EVALUATED, TRAINED, ZERO_COST
from nas.presets import PRESETS, TextTower, load_arch, preset_with_text
from nas.space import SearchSpace
from nas.stratified import stratified_order
from nas.train_config import TrainConfig

ALGORITHMS = ("tpe", "nsga2", "random", "grid", "fixed")
DIRECTIONS = ("max", "min")
EARLY_STOPPING = ("asha", "curve", "none")
SCHEDULES = ("shared", "per_budget")
TOP_FIELDS = ("name", "description", "extends", "space", "data", "text", "train", "objectives", "algorithm",
              "sampler", "archs", "groups", "trials", "budget", "constraints", "resources", "storage", "seed",
              "failures", "repeats", "image_size")
#: Sections a study that `extends` another merges field by field with the base's.
MERGED_SECTIONS = ("data", "train", "budget", "resources", "storage", "failures")
#: The base's fields that belong to its algorithm: not inherited by a study that chooses another.
ALGORITHM_FIELDS = ("sampler", "archs", "groups", "trials")
#: The base's fields about its listed candidates: not inherited by a study that lists its own.
CANDIDATE_FIELDS = ("groups", "trials")
#: Fields added after searches were stored: left out of the resolved form at their defaults, so that a search
#: begun before they existed still resumes (`--resume` compares resolved forms).
LATER_DEFAULTS = {"budget": {"between": 0, "below": 0}, "train": {"mask_ratio": 0.0}}
#: Train fields the study sets from elsewhere: the budget (samples, rungs) and data.workers.
DERIVED_TRAIN_FIELDS = {"samples": "budget (max_samples and the rungs)", "rungs": "budget (max_samples and the rungs)",
                        "workers": "data.workers"}


def _is_int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


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
        require(_is_int(self.min_samples, 1) and _is_int(self.max_samples, 1)
                and self.min_samples <= self.max_samples, "",
                f"needs integers 0 < min_samples <= max_samples, got {self.min_samples} and {self.max_samples}")
        require(isinstance(self.reduction_factor, (int, float)) and not isinstance(self.reduction_factor, bool)
                and self.reduction_factor > 1, "reduction_factor", f"must be > 1, got {self.reduction_factor!r}")
        require(self.early_stopping in EARLY_STOPPING, "early_stopping",
                f"{self.early_stopping!r} is not one of {', '.join(EARLY_STOPPING)}")
        require(self.schedule in SCHEDULES, "schedule", f"{self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        require(not self.per_budget or self.early_stopping == "none", "schedule",
                "per_budget trains each budget in a run of its own: set early_stopping: none")
        for name in ("between", "below"):
            require(_is_int(getattr(self, name)), name, f"must be an integer >= 0, got {getattr(self, name)!r}")

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
    candidates has to beat. Each repeat is a trial of its own (`nas.search.searcher.Candidate.seed`).
    """

    seeds: tuple[int, ...] = ()
    fraction: float = 1.0

    def __post_init__(self) -> None:
        require(isinstance(self.seeds, (list, tuple)) and all(_is_int(s) for s in self.seeds), "seeds",
                f"must be a list of integers >= 0, got {self.seeds!r}")
        object.__setattr__(self, "seeds", tuple(self.seeds))
        require(len(set(self.seeds)) == len(self.seeds), "seeds", f"lists a seed twice: {list(self.seeds)}")
        require(isinstance(self.fraction, (int, float)) and not isinstance(self.fraction, bool)
                and 0 < self.fraction <= 1, "fraction", f"must be in (0, 1], got {self.fraction!r}")

    def count(self, candidates: int) -> int:
        """How many of `candidates` listed candidates are repeated (the first ones)."""
        return 0 if not self.seeds or not candidates else max(1, math.ceil(self.fraction * candidates - 1e-9))


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
        require(self.concurrency is None or _is_int(self.concurrency, 1), "concurrency",
                f"must be an integer >= 1, got {self.concurrency!r}")
        require(_is_int(self.workers, 1), "workers", f"must be an integer >= 1, got {self.workers!r}")
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
        require(self.keep is None or _is_int(self.keep, 1), "keep",
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
            require(_is_int(getattr(self, name)), name, f"must be an integer >= 0, got {getattr(self, name)!r}")


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
    """A validated study file. See the module docstring for the fields.

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
    seed: int = 0
    archs: tuple[Arch, ...] = ()
    labels: tuple[str, ...] = ()  # one per arch when the study names its candidates
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sampler: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    repeats: Repeats = field(default_factory=Repeats)
    image_size: int | None = None  # the resolution every listed candidate is measured at (None: its own)

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
    def runs(self) -> tuple[tuple[int, int, int | None], ...]:
        """What a study of listed candidates measures, in order: (candidate index, schedule index, seed), every
        candidate at every schedule with the recipe's seed (None: `train.seed`), then the repeats."""
        schedules = range(len(self.budget.schedules))
        runs = [(i, b, None) for b in schedules for i in range(len(self.archs))]
        repeated = range(self.repeats.count(len(self.archs)))
        return (*runs, *((i, b, seed) for seed in self.repeats.seeds for b in schedules for i in repeated))

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
        `Study.from_dict` reads it back.
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
            "seed": self.seed, "failures": dataclasses.asdict(self.failures),
            **({"repeats": dataclasses.asdict(self.repeats)} if self.repeats.seeds else {}),
            **({"image_size": self.image_size} if self.image_size else {})})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Study:
        return cls.from_dict(_read(Path(path)), source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<study>") -> Study:
        return _Reader(raw, source).study()


def _read(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError("no such study file", source=str(path))
    return load_yaml(path)


def _extend(base: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """A study file that `extends` the resolved form of `base` (the module docstring says how)."""
    merged = {k: v for k, v in base.items() if k not in ("name", "description")}
    if raw.get("algorithm", merged["algorithm"]) != merged["algorithm"]:
        for name in ALGORITHM_FIELDS:
            merged.pop(name, None)
    if "archs" in raw:  # the base's count and groups are of the base's candidates
        for name in CANDIDATE_FIELDS:
            merged.pop(name, None)
    for key, value in raw.items():
        own_data = key == "data" and isinstance(value, dict) and bool({"urls", "synthetic", "dir"} & set(value))
        if key in MERGED_SECTIONS and isinstance(value, dict) and isinstance(merged.get(key), dict) and not own_data:
            merged[key] = {**merged[key], **value}
        elif key != "extends":
            merged[key] = value
    return merged


class _Reader:
    """Reads one study file; every check raises a `ConfigError` that names the file and the field."""

    def __init__(self, raw: Any, source: str, extending: tuple[str, ...] = ()):
        self.raw = raw
        self.source = source
        self.base = Path(source).resolve().parent if Path(source).exists() else Path.cwd()
        self.extending = extending  # the files of the studies that extend this one, for a cycle's error

    def error(self, message: str, field_name: str | None = None) -> ConfigError:
        return ConfigError(message, source=self.source, field=field_name)

    def study(self) -> Study:
        raw = self.raw
        if not isinstance(raw, dict):
            raise self.error("a study is a YAML mapping")
        unknown = sorted(set(raw) - set(TOP_FIELDS))
        if unknown:
            raise self.error(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(TOP_FIELDS)}")
        if "extends" in raw:
            raw = _extend(self.extended(raw["extends"]).resolved(), raw)
        for required in ("space", "data", "objectives", "budget"):
            if required not in raw:
                raise self.error("missing", required)
        name = raw.get("name", Path(self.source).stem)
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise self.error(f"must be letters, digits, - and _ (it names directories), got {name!r}", "name")
        algorithm = self.choice(raw.get("algorithm", "tpe"), ALGORITHMS, "algorithm")
        space = self.space(raw)
        objectives = self.objectives(raw.get("objectives"))
        data, workers = self.data(raw.get("data"), objectives)
        budget = self.section(raw, "budget", Budget)
        resources = self.section(raw, "resources", Resources)
        seed = self.integer(raw.get("seed", 0), "seed")
        archs = self.archs(raw, algorithm, space, seed)
        repeats = self.section(raw, "repeats", Repeats)
        image_size = raw.get("image_size")
        for where, used in (("budget.schedule", budget.per_budget), ("repeats", repeats.seeds),
                            ("image_size", image_size is not None)):
            if used and not archs:
                raise self.error("needs the candidates listed: algorithm fixed or grid", where)
        if image_size is not None:
            archs = self.resized(archs, image_size)
        labels = tuple(raw["archs"])[:len(archs)] if isinstance(raw.get("archs"), dict) else ()
        train = self.train(raw.get("train"), budget, resources.loader_workers if workers is None else workers)
        if train.seed in repeats.seeds:
            raise self.error(f"seed {train.seed} is train.seed, every candidate's first run", "repeats.seeds")
        self.check_masking(train, space, archs)
        self.ranks(train, budget, resources)
        runs = (len(archs) + repeats.count(len(archs)) * len(repeats.seeds)) * len(budget.schedules)
        return Study(
            name=name, source=self.source, space=space, data=data, train=train,
            objectives=objectives, algorithm=algorithm, trials=runs if archs else self.trials(raw),
            budget=budget, resources=resources, failures=self.section(raw, "failures", FailurePolicy),
            storage=self.section(raw, "storage", Storage), seed=seed,
            archs=archs, labels=labels, groups=self.groups(raw.get("groups"), labels),
            sampler=self.sampler(raw.get("sampler"), algorithm), description=str(raw.get("description", "")),
            repeats=repeats, image_size=image_size)

    def extended(self, value: Any) -> Study:
        """The study this one extends: a path relative to this file, or the name of a shipped study."""
        from nas.shipped import studies

        shipped = studies().get(value) if isinstance(value, str) else None
        path = str(shipped.resolve()) if shipped else self.path(value, "extends")
        chain = (*self.extending, str(Path(self.source).resolve()))
        if path in chain:
            raise self.error(f"extends itself: {' -> '.join([*chain, path])}", "extends")
        try:
            return _Reader(_read(Path(path)), path, chain).study()
        except ConfigError as err:
            raise self.error(str(err), "extends") from None

    def resized(self, archs: tuple[Arch, ...], image_size: Any, distinct: bool = True) -> tuple[Arch, ...]:
        """The listed candidates at `image_size` (checked against the constraints at their own resolution); with
        `distinct`, no two of them may become the same arch."""
        image_size = self.integer(image_size, "image_size", low=1)
        try:
            resized = tuple(arch.replace(image_size=image_size) for arch in archs)
        except ConfigError as err:
            raise self.error(err.message, "image_size") from None
        if distinct and len(set(resized)) < len(resized):
            raise self.error("makes two listed candidates the same arch", "image_size")
        return resized

    def check_masking(self, train: TrainConfig, space: SearchSpace, archs: tuple[Arch, ...]) -> None:
        """Token masking needs a Transformer stage in every candidate the study may train."""
        if not train.mask_ratio:
            return
        without = [arch.name() for arch in archs if arch.transformer is None]
        if without or (not archs and space.transformer is None):
            raise self.error(f"masks the Transformer stage's tokens; {', '.join(without) or 'the space'} has no "
                             "Transformer stage", "train.mask_ratio")

    def data_base(self) -> Path:
        """A study installed with the package writes its data under the current directory (`nas.shipped`)."""
        from nas.shipped import data_base

        return data_base(self.source) if Path(self.source).exists() else self.base

    # ---- fields ------------------------------------------------------------------------------------------
    def path(self, value: Any, field_name: str, base: Path | None = None) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(f"expected a path, got {value!r}", field_name)
        if "://" in value or value.startswith("pipe:"):
            return value
        return str(((base or self.base) / Path(value).expanduser()).resolve())

    def space(self, raw: dict[str, Any]) -> SearchSpace:
        """The space file (or an inline mapping, as `resolved` writes it), with the study's text and constraints."""
        from nas.shipped import spaces

        if isinstance(raw["space"], dict):
            spec, where = dict(raw["space"]), f"{self.source} (space)"
        else:
            shipped = spaces().get(raw["space"]) if isinstance(raw["space"], str) else None
            path = shipped or self.path(raw["space"], "space")
            if not Path(path).is_file():
                raise self.error(f"no such search space file: {path} (relative paths are relative to the study "
                                 f"file; shipped spaces by name: {', '.join(spaces())})", "space")
            space = SearchSpace.load(path)
            spec, where = dict(space.spec), space.source
        if "text" in raw:
            spec["text"] = self.text(raw["text"])
        constraints = raw.get("constraints") or {}
        if not isinstance(constraints, dict):
            raise self.error("expected a mapping of constraints (image_gmacs, image_params_m, train_memory_gib)",
                             "constraints")
        spec["constraints"] = {**(spec.get("constraints") or {}), **constraints}
        try:
            return SearchSpace(spec, source=where)
        except ConfigError as err:
            raise self.error(err.message, err.field) from None

    def text(self, value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            if value not in PRESETS:
                raise self.error(f"unknown preset {value!r}; give a preset name or text tower fields", "text")
            return dataclasses.asdict(preset_with_text(value)[1])
        if not isinstance(value, dict):
            raise self.error("a preset name or a mapping of text tower fields", "text")
        return value

    def objectives(self, value: Any) -> dict[str, str]:
        if not isinstance(value, dict) or not value:
            raise self.error("a mapping of metric: max|min, e.g. {zeroshot_top1: max, image_gmacs: min}",
                             "objectives")
        for metric, direction in value.items():
            if metric not in TRAINED + COST_METRICS + ZERO_COST:
                raise self.error(f"unknown metric; measured: {', '.join(TRAINED)}; from the cost model: "
                                 f"{', '.join(COST_METRICS)}; zero-cost, before training: {', '.join(ZERO_COST)}",
                                 f"objectives.{metric}")
            self.choice(direction, DIRECTIONS, f"objectives.{metric}")
        if not any(m in TRAINED for m in value):
            raise self.error("needs at least one measured metric (the cost model's are known without training)",
                             "objectives")
        return dict(value)

    def data(self, value: Any, objectives: dict[str, str]) -> tuple[StudyData, int | None]:
        """The data section, and its loader workers per trial (None: from the trial's CPUs)."""
        if not isinstance(value, dict):
            raise self.error("a mapping with urls (shards) or synthetic, and the eval sets", "data")
        value = dict(value)
        synthetic = value.pop("synthetic", None)
        directory = value.pop("dir", None)
        workers = value.pop("workers", "auto")
        evals = {"zeroshot": value.pop("zeroshot", None), "retrieval": value.pop("retrieval", None)}
        templates = value.pop("zeroshot_templates", None)
        if templates is not None:
            try:
                templates = tuple(check_templates(templates, field="data.zeroshot_templates"))
            except ConfigError as err:
                raise self.error(err.message, err.field) from None
        if synthetic is not None:
            if not isinstance(synthetic, dict):
                raise self.error("a mapping of nas.data.SynthConfig fields, e.g. {samples: 12000, size: 64}",
                                 "data.synthetic")
            if directory is None:
                raise self.error("where the synthetic data is written or found (e.g. ../data/quickstart)",
                                 "data.dir")
            if "urls" in value:
                raise self.error("give urls or synthetic, not both", "data.urls")
            synthetic = self.section({"synthetic": synthetic}, "synthetic", SynthConfig, "data.")
            directory = self.path(directory, "data.dir", self.data_base())
            value["urls"] = str(Path(directory) / "shards")
            if "captions" in value and "metadata" not in value:
                value["metadata"] = str(Path(directory) / "metadata")
            defaults = {"zeroshot": synthetic.zeroshot_per_class, "retrieval": synthetic.retrieval_samples}
            for kind, enabled in defaults.items():
                if evals[kind] is None and enabled:
                    evals[kind] = str(Path(directory) / "eval" / kind)
        elif "urls" not in value:
            raise self.error("missing: the training shards (a directory, brace pattern, URL or pipe: command), "
                             "or synthetic", "data.urls")
        for name in sorted(SETTINGS_FIELDS & set(value)):
            raise self.error("set per candidate by the trainer (from train, budget and the arch)", f"data.{name}")
        if isinstance(value["urls"], str) and synthetic is None:
            value["urls"] = self.path(value["urls"], "data.urls")
        for name in ("subset", "metadata"):
            if value.get(name):
                value[name] = self.path(value[name], f"data.{name}")
        try:
            source = DataSource.from_dict(value)
        except ConfigError as err:
            raise self.error(err.message, f"data.{err.field}" if err.field else "data") from None
        evals = {k: self.path(v, f"data.{k}") if v is not None else None for k, v in evals.items()}
        for metric in objectives:
            kind = "zeroshot" if metric.startswith("zeroshot") else "retrieval" if metric in EVALUATED else None
            if kind and evals[kind] is None:
                raise self.error(f"objective {metric} needs an evaluation set", f"data.{kind}")
        if workers != "auto":
            workers = self.integer(workers, "data.workers")
        return (StudyData(source=source, zeroshot=evals["zeroshot"], retrieval=evals["retrieval"],
                          synthetic=synthetic, dir=directory, zeroshot_templates=templates),
                None if workers == "auto" else workers)

    def train(self, value: Any, budget: Budget, workers: int) -> TrainConfig:
        """The recipe at the full budget, checked for every run the study makes."""
        value = {} if value is None else value
        if not isinstance(value, dict):
            raise self.error("a mapping of nas.train_config.TrainConfig fields", "train")
        for name, where in DERIVED_TRAIN_FIELDS.items():
            if name in value:
                raise self.error(f"set by {where}", f"train.{name}")
        try:
            reject_unknown(value, (f.name for f in dataclasses.fields(TrainConfig)))
            for samples in budget.schedules:  # valid for every run (the warmup fits the smallest)
                config = TrainConfig(**value, samples=samples, rungs=budget.measured_at(samples)[:-1],
                                     workers=workers)
        except ConfigError as err:
            raise self.error(err.message, f"train.{err.field}" if err.field else "train") from None
        except TypeError as err:
            raise self.error(str(err), "train") from None
        return config

    def ranks(self, train: TrainConfig, budget: Budget, resources: Resources) -> None:
        """A data-parallel trial splits each batch, and each budget, evenly over its ranks."""
        ranks = resources.workers
        if train.batch_size % (ranks * train.accum_freq):
            raise self.error(f"train.batch_size {train.batch_size} does not split over {ranks} workers x "
                             f"{train.accum_freq} micro-batches", "resources.workers")
        uneven = [b for b in budget.schedules if b % ranks]
        if uneven:
            raise self.error(f"the runs' budgets ({', '.join(map(str, uneven))} samples) do not split evenly over "
                             f"{ranks} workers",
                             "resources.workers")

    def archs(self, raw: dict[str, Any], algorithm: str, space: SearchSpace, seed: int) -> tuple[Arch, ...]:
        """The candidates of a `fixed` or `grid` study, in the order they are measured (none otherwise).

        A grid is the space's feasible archs (at the study's `image_size`, when it gives one) in a seeded
        stratified order (`nas.stratified`): fewer trials than the grid still cover every block, width, depth
        and the cost range evenly. A grid's resolved form lists
        them (`archs`), and reads back as that list.
        """
        value = raw.get("archs")
        if algorithm not in ("fixed", "grid") and value is not None:
            raise self.error("only with algorithm: fixed", "archs")
        if algorithm == "grid":
            if not space.finite:
                raise self.error("grid needs a finite space (give float ranges a step)", "algorithm")
            if value is not None:
                archs = self.fixed(value, space)
            else:
                found = space.enumerate(feasible=True)
                if raw.get("image_size") is not None:  # the grid at one resolution: archs that differ only in it
                    found = dict.fromkeys(self.resized(tuple(found), raw["image_size"], distinct=False))
                archs = stratified_order(found, seed)
            if not archs:
                raise self.error("no arch of the space meets the constraints", "constraints")
            return tuple(archs[: self.integer(raw.get("trials", len(archs)), "trials", low=1)])
        if algorithm != "fixed":
            return ()
        return tuple(self.fixed(value, space)[: self.integer(raw.get("trials", len(value or [])), "trials", low=1)])

    def fixed(self, value: Any, space: SearchSpace) -> list[Arch]:
        if not isinstance(value, (list, dict)) or not value or \
                (isinstance(value, dict) and not all(isinstance(k, str) and k for k in value)):
            raise self.error("algorithm fixed needs a list of presets, arch JSON files or arch mappings, or a "
                             "mapping of label: arch", "archs")
        named = isinstance(value, dict)
        archs = []
        for i, item in enumerate(value.values() if named else value):
            where = f"archs.{list(value)[i]}" if named else f"archs[{i}]"
            try:
                if isinstance(item, dict):
                    arch = Arch.from_dict(item)
                elif isinstance(item, str):
                    arch = load_arch(self.path(item, where) if item.endswith(".json") else item)[0]
                else:
                    raise ConfigError(f"expected a preset name, a .json path or a mapping, got {item!r}")
            except ConfigError as err:
                raise self.error(err.message if not err.source else str(err), where) from None
            violations = space.violations(arch)
            if violations:
                raise self.error(f"{arch.name()} violates the constraints: {'; '.join(violations)}", where)
            if arch in archs:
                raise self.error(f"{arch.name()} is listed twice", where)
            archs.append(arch)
        return archs

    def groups(self, value: Any, labels: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        """Named sets of labelled candidates (at least two each) that a report compares."""
        if value is None:
            return {}
        if not labels:
            raise self.error("needs labelled candidates (archs as a mapping of label: arch)", "groups")
        if not isinstance(value, dict):
            raise self.error("a mapping of group name: [labels]", "groups")
        groups = {}
        for name, members in value.items():
            if not isinstance(members, list) or len(members) < 2:
                raise self.error("a list of at least two labels", f"groups.{name}")
            unknown = [m for m in members if m not in labels]
            if unknown:
                raise self.error(f"unknown label(s) {', '.join(map(str, unknown))}; labels: {', '.join(labels)}",
                                 f"groups.{name}")
            groups[str(name)] = tuple(members)
        return groups

    def trials(self, raw: dict[str, Any]) -> int:
        if "trials" not in raw:
            raise self.error("missing: how many candidates to measure", "trials")
        return self.integer(raw["trials"], "trials", low=1)

    def sampler(self, value: Any, algorithm: str) -> dict[str, Any]:
        if value is None:
            return {}
        if algorithm in ("grid", "fixed") or not isinstance(value, dict):
            raise self.error("keyword arguments of the tpe, nsga2 or random Optuna sampler (a mapping)", "sampler")
        return dict(value)

    # ---- helpers -----------------------------------------------------------------------------------------
    def section(self, raw: dict[str, Any], key: str, kind: type, prefix: str = "") -> Any:
        """A mapping read into a self-validating dataclass; its errors name `prefix + key + .field`."""
        value = raw.get(key) or {}
        where = f"{prefix}{key}"
        if not isinstance(value, dict):
            raise self.error(f"expected a mapping of {', '.join(f.name for f in dataclasses.fields(kind))}", where)
        allowed = [f.name for f in dataclasses.fields(kind) if f.init]
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise self.error(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}", where)
        try:
            return kind(**value)
        except ConfigError as err:
            raise self.error(err.message, f"{where}.{err.field}" if err.field else where) from None
        except TypeError as err:
            raise self.error(str(err), where) from None

    def choice(self, value: Any, allowed: tuple[str, ...], field_name: str) -> str:
        if value not in allowed:
            raise self.error(f"{value!r} is not one of {', '.join(allowed)}", field_name)
        return value

    def integer(self, value: Any, field_name: str, low: int = 0) -> int:
        if not _is_int(value, low):
            raise self.error(f"must be an integer >= {low}, got {value!r}", field_name)
        return value
