"""`Study`: what one search runs, read from a YAML file in `studies/` and checked before anything starts.

    name: quickstart
    space: ../search_spaces/tiny.yaml        # the search space (its text tower and constraints apply)
    data:
      synthetic: {samples: 12000, size: 64}  # or urls: shards (dir, brace pattern, URL, pipe:)
      dir: ../data/quickstart                # where the synthetic data lives (written when absent)
      zeroshot: ...                          # eval sets (default for synthetic: dir/eval/...)
      retrieval: ...
      captions: "{color} {shape}"            # optional: caption each image from its metadata row (a template)
      workers: auto                          # + any other nas.data.StreamConfig field: subset, shards, augment, ...
    text: {width: 64, layers: 2, heads: 2, context_length: 32}   # or a preset name; default: the space's
    train: {batch_size: 64, lr: 0.001, warmup: 20}               # nas.train.TrainConfig fields
    objectives: {zeroshot_top1: max, image_gmacs: min}           # one, or several (a Pareto search)
    algorithm: tpe                           # tpe | nsga2 | random | grid | fixed (then archs: [...])
    archs: {ViTamin: ViTamin-S, ViT: ViT-S-16}   # fixed: a list, or a mapping that labels each candidate
    groups: {family: [ViTamin, ViT]}         # labelled candidates that a report compares with each other
    sampler: {n_startup_trials: 4}           # keyword arguments of the Optuna sampler
    trials: 12
    budget: {min_samples: 1500, max_samples: 13500, reduction_factor: 3}   # ASHA rungs in samples seen
                                             # (+ early_stopping: asha|none, schedule: shared|per_budget)
    constraints: {image_gmacs: {max: 0.05}}  # on top of the space's
    resources: {cpus: 1, gpus: 0, memory_gib: null, concurrency: 2}
    seed: 0
    failures: {max_retries: 2, oom_retries: 1}

Relative paths are relative to the study file. Every error names the file and the field, and the CLI exits
with code 2 on it. A `Study` is plain data (picklable): Ray ships it to every trial.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nas.arch import Arch
from nas.errors import ConfigError
from nas.presets import PRESETS, TextTower, preset_with_text
from nas.results import COST_METRICS, TRAINED_METRICS
from nas.space import SearchSpace

ALGORITHMS = ("tpe", "nsga2", "random", "grid", "fixed")
DIRECTIONS = ("max", "min")
EARLY_STOPPING = ("asha", "none")
SCHEDULES = ("shared", "per_budget")
TOP_FIELDS = ("name", "description", "space", "data", "text", "train", "objectives", "algorithm", "sampler",
              "archs", "groups", "trials", "budget", "constraints", "resources", "seed", "failures")
#: Stream fields the trainer sets per candidate (budget, batch, resolution, resume point): not for the study.
TRAINER_STREAM_FIELDS = ("batch_size", "image_size", "samples", "context_length", "start_sample",
                         "resume_positions", "pin_memory", "train", "seed")
#: Train fields the budget sets.
BUDGET_TRAIN_FIELDS = ("samples", "rungs")


@dataclass(frozen=True)
class Budget:
    """ASHA's rungs in samples seen: min_samples x reduction_factor^k below max_samples, then max_samples.

    `schedule: shared` trains a candidate once, with one cosine schedule to max_samples, and measures it at
    every rung (what ASHA needs; the smaller budgets are then measured mid-schedule). `schedule: per_budget`
    trains every (candidate, budget) pair in a run of its own whose schedule ends at that budget, as data
    scaling laws are fitted (fixed and grid studies, without early stopping; trials = candidates x rungs).
    """

    min_samples: int
    max_samples: int
    reduction_factor: float = 3.0
    early_stopping: str = "asha"
    schedule: str = "shared"

    @property
    def per_budget(self) -> bool:
        return self.schedule == "per_budget"

    @property
    def schedules(self) -> tuple[int, ...]:
        """The budgets that training runs end at: every rung with `schedule: per_budget`, else max_samples."""
        return self.rungs if self.per_budget else (self.max_samples,)

    def measured_at(self, schedule: int) -> tuple[int, ...]:
        """The budgets a run whose schedule ends at `schedule` is measured at: every rung of a shared schedule,
        or only its own end."""
        return (schedule,) if self.per_budget else self.rungs

    @property
    def rungs(self) -> tuple[int, ...]:
        """The budgets at which every candidate is evaluated; ASHA decides at all but the last."""
        rungs, k = [], 0
        while (budget := int(round(self.min_samples * self.reduction_factor**k))) < self.max_samples:
            rungs.append(budget)
            k += 1
        return (*rungs, self.max_samples)


@dataclass(frozen=True)
class Resources:
    """One trial's share of a node, and how many trials run at once (None: as many as the cluster holds).

    `memory_gib` caps what a trial may allocate: on a GPU, its share of the device's memory; on a CPU, the
    address space it may add to its worker, so that a candidate too big for the machine fails with `oom`
    instead of taking the node down. Ray also reserves it when placing trials, and each trial then runs in
    a fresh worker process.
    """

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gib: float | None = None
    concurrency: int | None = None

    @property
    def threads(self) -> int:
        """Torch threads of one trial: its whole CPUs (at least one)."""
        return max(1, int(self.cpus))


@dataclass(frozen=True)
class FailurePolicy:
    """A trial whose worker dies or raises is retried from its last checkpoint up to `max_retries` times;
    out of memory is retried `oom_retries` times with half the micro-batch and twice the gradient
    accumulation (the same effective batch), then recorded as `oom`."""

    max_retries: int = 2
    oom_retries: int = 1


@dataclass(frozen=True)
class DataSpec:
    """Training shards, their stream settings and the evaluation sets, with absolute local paths."""

    stream: dict[str, Any]
    zeroshot: str | None = None
    retrieval: str | None = None
    synthetic: dict[str, Any] | None = None
    dir: str | None = None
    workers: int | None = None

    def stream_config(self, seed: int, cpus: float) -> Any:
        """A `nas.data.StreamConfig`; the trainer sets batch, resolution, budget and resume point."""
        from nas.data import StreamConfig

        workers = self.workers if self.workers is not None else auto_workers(cpus)
        return StreamConfig(**{**self.stream, "workers": workers, "seed": seed})


def auto_workers(cpus: float) -> int:
    """Loader processes for a trial's CPU share: none below 3 CPUs (decoding in the training process costs
    less than a worker's start and memory there), else one per CPU beyond the training thread's, up to 8."""
    return 0 if cpus < 3 else min(8, int(cpus) - 1)


@dataclass(frozen=True)
class Study:
    """A validated study file. See the module docstring for the fields."""

    name: str
    source: str
    space: SearchSpace
    data: DataSpec
    train: dict[str, Any]
    objectives: dict[str, str]
    algorithm: str
    trials: int
    budget: Budget
    resources: Resources = field(default_factory=Resources)
    failures: FailurePolicy = field(default_factory=FailurePolicy)
    seed: int = 0
    archs: tuple[Arch, ...] = ()
    labels: tuple[str, ...] = ()  # one per arch when the study names its candidates
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sampler: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def text(self) -> TextTower:
        return self.space.text

    @property
    def trained_objectives(self) -> dict[str, str]:
        """The objectives that training measures (ASHA decides on these; cost objectives are known ahead)."""
        return {k: v for k, v in self.objectives.items() if k in TRAINED_METRICS}

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def train_config(self, accum_freq: int | None = None, schedule: int | None = None) -> Any:
        """The trainer's config for one run: the recipe, its budget (`schedule`, one of `budget.schedules`;
        default the largest) and the rungs before its end, an OOM retry's accumulation."""
        from nas.train import TrainConfig

        samples = schedule or self.budget.max_samples
        values = {**self.train, "samples": samples, "rungs": self.budget.measured_at(samples)[:-1]}
        if accum_freq is not None:
            values["accum_freq"] = accum_freq
        return TrainConfig(**values)

    def resolved(self) -> dict[str, Any]:
        """What defines the study's results: the file's content with the space inlined and paths made absolute.

        Stored in the results database; `--resume` refuses a study whose resolved form has changed.
        """
        return {"name": self.name, "space": self.space.spec, "data": dataclasses.asdict(self.data),
                "train": dict(self.train), "objectives": dict(self.objectives), "algorithm": self.algorithm,
                "sampler": dict(self.sampler), "archs": [a.to_dict() for a in self.archs], "trials": self.trials,
                "budget": dataclasses.asdict(self.budget), "resources": dataclasses.asdict(self.resources),
                "seed": self.seed, "failures": dataclasses.asdict(self.failures),
                **({"labels": list(self.labels), "groups": {k: list(v) for k, v in self.groups.items()}}
                   if self.labels else {})}

    @classmethod
    def load(cls, path: str | os.PathLike) -> Study:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("no such study file", source=str(path))
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"not valid YAML ({err})", source=str(path)) from None
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<study>") -> Study:
        return _Reader(raw, source).study()


class _Reader:
    """Reads one study file; every check raises a `ConfigError` that names the file and the field."""

    def __init__(self, raw: Any, source: str):
        self.raw = raw
        self.source = source
        self.base = Path(source).resolve().parent if Path(source).exists() else Path.cwd()

    def error(self, message: str, field_name: str | None = None) -> ConfigError:
        return ConfigError(message, source=self.source, field=field_name)

    def study(self) -> Study:
        raw = self.raw
        if not isinstance(raw, dict):
            raise self.error("a study is a YAML mapping")
        unknown = sorted(set(raw) - set(TOP_FIELDS))
        if unknown:
            raise self.error(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(TOP_FIELDS)}")
        for required in ("space", "data", "objectives", "budget"):
            if required not in raw:
                raise self.error("missing", required)
        name = raw.get("name", Path(self.source).stem)
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise self.error(f"must be letters, digits, - and _ (it names directories), got {name!r}", "name")
        algorithm = self.choice(raw.get("algorithm", "tpe"), ALGORITHMS, "algorithm")
        space = self.space(raw)
        objectives = self.objectives(raw.get("objectives"))
        data = self.data(raw.get("data"), objectives)
        budget = self.budget(raw.get("budget"))
        seed = self.integer(raw.get("seed", 0), "seed")
        archs = self.archs(raw, algorithm, space, seed)
        if budget.per_budget and not archs:
            raise self.error("per_budget needs the candidates listed: algorithm fixed or grid", "budget.schedule")
        labels = tuple(raw["archs"])[:len(archs)] if isinstance(raw.get("archs"), dict) else ()
        runs = len(archs) * len(budget.schedules)
        study = Study(
            name=name, source=self.source, space=space, data=data, train=self.train(raw.get("train"), budget),
            objectives=objectives, algorithm=algorithm, trials=runs if archs else self.trials(raw),
            budget=budget, resources=self.section(raw, "resources", Resources),
            failures=self.section(raw, "failures", FailurePolicy), seed=seed,
            archs=archs, labels=labels, groups=self.groups(raw.get("groups"), labels),
            sampler=self.sampler(raw.get("sampler"), algorithm),
            description=str(raw.get("description", "")))
        self.check_resources(study.resources)
        self.check_failures(study.failures)
        return study

    # ---- fields ------------------------------------------------------------------------------------------
    def path(self, value: Any, field_name: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(f"expected a path, got {value!r}", field_name)
        if "://" in value or value.startswith("pipe:"):
            return value
        return str((self.base / Path(value).expanduser()).resolve())

    def space(self, raw: dict[str, Any]) -> SearchSpace:
        space = SearchSpace.load(self.path(raw["space"], "space"))
        spec = dict(space.spec)
        if "text" in raw:
            spec["text"] = self.text(raw["text"])
        constraints = raw.get("constraints") or {}
        if not isinstance(constraints, dict):
            raise self.error("expected a mapping of constraints (image_gmacs, image_params_m, train_memory_gib)",
                             "constraints")
        spec["constraints"] = {**(spec.get("constraints") or {}), **constraints}
        try:
            return SearchSpace(spec, source=space.source)
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
            if metric not in TRAINED_METRICS + COST_METRICS:
                raise self.error(f"unknown metric; measured: {', '.join(TRAINED_METRICS)}; from the cost model: "
                                 f"{', '.join(COST_METRICS)}", f"objectives.{metric}")
            self.choice(direction, DIRECTIONS, f"objectives.{metric}")
        if not any(m in TRAINED_METRICS for m in value):
            raise self.error("needs at least one measured metric (the cost model's are known without training)",
                             "objectives")
        return dict(value)

    def data(self, value: Any, objectives: dict[str, str]) -> DataSpec:
        from nas.data import StreamConfig
        from nas.data.synth import SynthConfig

        if not isinstance(value, dict):
            raise self.error("a mapping with urls (shards) or synthetic, and the eval sets", "data")
        value = dict(value)
        synthetic = value.pop("synthetic", None)
        directory = value.pop("dir", None)
        workers = value.pop("workers", "auto")
        evals = {"zeroshot": value.pop("zeroshot", None), "retrieval": value.pop("retrieval", None)}
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
            directory = self.path(directory, "data.dir")
            value["urls"] = str(Path(directory) / "shards")
            if "captions" in value and "metadata" not in value:
                value["metadata"] = str(Path(directory) / "metadata")
            defaults = {"zeroshot": synthetic.zeroshot_per_class, "retrieval": synthetic.retrieval_samples}
            for kind, enabled in defaults.items():
                if kind not in self.raw["data"] and enabled:
                    evals[kind] = str(Path(directory) / "eval" / kind)
            synthetic = dataclasses.asdict(synthetic)
        elif "urls" not in value:
            raise self.error("missing: the training shards (a directory, brace pattern, URL or pipe: command), "
                             "or synthetic", "data.urls")
        for name in TRAINER_STREAM_FIELDS:
            if name in value:
                raise self.error("set per candidate by the trainer (from train, budget and the arch)", f"data.{name}")
        if isinstance(value["urls"], str) and synthetic is None:
            value["urls"] = self.path(value["urls"], "data.urls")
        for name in ("subset", "metadata"):
            if value.get(name):
                value[name] = self.path(value[name], f"data.{name}")
        try:
            StreamConfig.from_dict({**value, "workers": 0})
        except ConfigError as err:
            raise self.error(err.message, f"data.{err.field}" if err.field else "data") from None
        evals = {k: self.path(v, f"data.{k}") if v is not None else None for k, v in evals.items()}
        for metric in objectives:
            kind = "zeroshot" if metric.startswith("zeroshot") else "retrieval" if "_R@" in metric else None
            if kind and evals[kind] is None:
                raise self.error(f"objective {metric} needs an evaluation set", f"data.{kind}")
        if workers != "auto":
            workers = self.integer(workers, "data.workers")
        return DataSpec(stream=value, zeroshot=evals["zeroshot"], retrieval=evals["retrieval"],
                        synthetic=synthetic, dir=directory, workers=None if workers == "auto" else workers)

    def budget(self, value: Any) -> Budget:
        budget = self.section({"budget": value}, "budget", Budget)
        if not (isinstance(budget.min_samples, int) and isinstance(budget.max_samples, int)
                and 0 < budget.min_samples <= budget.max_samples):
            raise self.error(f"needs integers 0 < min_samples <= max_samples, got {budget.min_samples} and "
                             f"{budget.max_samples}", "budget")
        if not isinstance(budget.reduction_factor, (int, float)) or budget.reduction_factor <= 1:
            raise self.error(f"must be > 1, got {budget.reduction_factor!r}", "budget.reduction_factor")
        self.choice(budget.early_stopping, EARLY_STOPPING, "budget.early_stopping")
        self.choice(budget.schedule, SCHEDULES, "budget.schedule")
        if budget.per_budget and budget.early_stopping != "none":
            raise self.error("per_budget trains each budget in a run of its own: set early_stopping: none",
                             "budget.schedule")
        return budget

    def train(self, value: Any, budget: Budget) -> dict[str, Any]:
        from nas.train import TrainConfig

        value = {} if value is None else value
        if not isinstance(value, dict):
            raise self.error("a mapping of nas.train.TrainConfig fields", "train")
        for name in BUDGET_TRAIN_FIELDS:
            if name in value:
                raise self.error("set by budget (max_samples and the rungs)", f"train.{name}")
        try:
            for samples in budget.schedules:  # valid for every run
                TrainConfig.from_dict({**value, "samples": samples, "rungs": budget.measured_at(samples)[:-1]})
        except ConfigError as err:
            raise self.error(err.message, f"train.{err.field}" if err.field else "train") from None
        except TypeError as err:
            raise self.error(str(err), "train") from None
        return dict(value)

    def archs(self, raw: dict[str, Any], algorithm: str, space: SearchSpace, seed: int) -> tuple[Arch, ...]:
        """The candidates of a `fixed` or `grid` study, in the order they are measured (none otherwise)."""
        value = raw.get("archs")
        if algorithm != "fixed" and value is not None:
            raise self.error("only with algorithm: fixed", "archs")
        if algorithm == "grid":
            if not space.finite:
                raise self.error("grid needs a finite space (give float ranges a step)", "algorithm")
            archs = list(space.enumerate(feasible=True))
            if not archs:
                raise self.error("no arch of the space meets the constraints", "constraints")
            random.Random(seed).shuffle(archs)  # fewer trials than the grid still cover it evenly
            return tuple(archs[: self.integer(raw.get("trials", len(archs)), "trials", low=1)])
        if algorithm != "fixed":
            return ()
        return tuple(self.fixed(value, space)[: self.integer(raw.get("trials", len(value or [])), "trials", low=1)])

    def fixed(self, value: Any, space: SearchSpace) -> list[Arch]:
        from nas.arch_cli import load_arch

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
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise self.error(f"must be an integer >= {low}, got {value!r}", field_name)
        return value

    def check_resources(self, resources: Resources) -> None:
        for name in ("cpus", "gpus"):
            value = getattr(resources, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise self.error(f"must be a number >= 0, got {value!r}", f"resources.{name}")
        if resources.cpus <= 0 and resources.gpus <= 0:
            raise self.error("a trial needs some CPU or GPU", "resources.cpus")
        if resources.gpus > 1 and resources.gpus != int(resources.gpus):
            raise self.error("above 1, GPUs per trial must be whole", "resources.gpus")
        if resources.memory_gib is not None and (not isinstance(resources.memory_gib, (int, float))
                                                 or resources.memory_gib <= 0):
            raise self.error(f"must be a positive number of GiB or null, got {resources.memory_gib!r}",
                             "resources.memory_gib")
        if resources.concurrency is not None:
            self.integer(resources.concurrency, "resources.concurrency", low=1)

    def check_failures(self, failures: FailurePolicy) -> None:
        self.integer(failures.max_retries, "failures.max_retries")
        self.integer(failures.oom_retries, "failures.oom_retries")
