"""Reading a study file (`load_study`), or the resolved form the results database stores (`study_from_dict`),
into a typed `Study`: every check raises a `ConfigError` that names the file and the field. The package
docstring (`nas.study`) gives the format and how `extends` merges a base study.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from nas.arch import Arch
from nas.cost import COST_METRICS
from nas.data import DataSource, SynthConfig
from nas.data.prompts import check_templates
from nas.data.source import SETTINGS_FIELDS
from nas.errors import ConfigError, is_int, load_yaml, reject_unknown
from nas.metrics import EVALUATED, TRAINED, ZERO_COST
from nas.presets import PRESETS, load_arch, preset_with_text
from nas.space import SearchSpace
from nas.stratified import stratified_order
from nas.study.study import (
    DERIVED_TRAIN_FIELDS,
    Budget,
    Confirm,
    FailurePolicy,
    Proxy,
    Repeats,
    Resources,
    StandIn,
    Storage,
    Study,
    StudyData,
)
from nas.train_config import TrainConfig

ALGORITHMS = ("tpe", "nsga2", "random", "grid", "fixed")
DIRECTIONS = ("max", "min")
TOP_FIELDS = ("name", "description", "extends", "space", "data", "text", "train", "objectives", "algorithm",
              "sampler", "archs", "groups", "trials", "budget", "constraints", "resources", "storage", "seed",
              "failures", "repeats", "image_size", "confirm", "stand_in", "proxy")
#: Sections a study that `extends` another merges field by field with the base's.
MERGED_SECTIONS = ("data", "train", "budget", "resources", "storage", "failures")
#: The base's fields that belong to its algorithm: not inherited by a study that chooses another.
ALGORITHM_FIELDS = ("sampler", "archs", "groups", "trials")
#: The base's fields about its listed candidates: not inherited by a study that lists its own.
CANDIDATE_FIELDS = ("groups", "trials")


def load_study(path: str | os.PathLike) -> Study:
    """The study file at `path`, checked."""
    return study_from_dict(_read(Path(path)), source=str(path))


def study_from_dict(raw: Any, source: str = "<study>") -> Study:
    """A study from its file form (`Study.resolved()` reads back with it); `source` names it in errors."""
    return _Reader(raw, source).study()


def _read(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError("no such study file", source=str(path))
    return load_yaml(path)


def _extend(base: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """A study file that `extends` the resolved form of `base` (the package docstring says how)."""
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
            repeats=repeats, image_size=image_size, confirm=self.section(raw, "confirm", Confirm),
            stand_in=self.section(raw, "stand_in", StandIn), proxy=self.proxy(raw, data))

    def proxy(self, raw: dict[str, Any], data: StudyData) -> Proxy | None:
        """The supernet that screens the candidates (none without a `proxy` section), its run's path resolved."""
        if raw.get("proxy") is None:
            return None
        proxy = self.section(raw, "proxy", Proxy)
        if data.zeroshot is None:
            raise self.error("the supernet scores candidates by zero-shot top-1: the study needs a zero-shot set",
                             "data.zeroshot")
        return dataclasses.replace(proxy, supernet=self.path(proxy.supernet, "proxy.supernet"))

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
        if not is_int(value, low):
            raise self.error(f"must be an integer >= {low}, got {value!r}", field_name)
        return value
