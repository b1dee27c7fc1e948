"""The study file's schema, generated from the typed study: the dataclasses its sections are read into (`Budget`,
`Resources`, `TrainConfig`, `DataSource`, ...), their field types and defaults, and the reader's own lists of
fields and choices.

- `study_schema()`: a JSON Schema of the study file, shipped as `studies/study.schema.json` (an editor completes
  and checks a study with it: `# yaml-language-server: $schema=<that file>` on a study's first line);
- `fields_reference()`: the same, as the reference `vitamin-nas studies --fields` prints.

Both come from one walk of the typed configs, and tests/test_study.py checks the shipped file against it, so
neither drifts from what `load_study` reads. `load_study` stays the judge: it checks what a schema cannot (paths,
a space's constraints, a study's runs against its resources).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from nas.cost import COST_METRICS
from nas.data import Augment, DataSource, SynthConfig
from nas.data.source import SETTINGS_FIELDS
from nas.metrics import TRAINED, ZERO_COST
from nas.presets import PRESETS, TextTower
from nas.study.reader import ALGORITHMS, DIRECTIONS, MERGED_SECTIONS, TOP_FIELDS
from nas.study.study import (
    DERIVED_TRAIN_FIELDS,
    EARLY_STOPPING,
    SCHEDULES,
    Budget,
    Confirm,
    FailurePolicy,
    Proxy,
    Repeats,
    Resources,
    StandIn,
    Storage,
)
from nas.train_config import LOSSES, PRECISIONS, TrainConfig

SCHEMA_FILE = "study.schema.json"
#: The fields a study file gives, unless it `extends` a study that does.
REQUIRED = ("space", "data", "objectives", "budget")
#: The sections read into one dataclass each, field by field.
SECTIONS: dict[str, type] = {"budget": Budget, "resources": Resources, "storage": Storage, "failures": FailurePolicy,
                             "repeats": Repeats, "confirm": Confirm, "stand_in": StandIn, "proxy": Proxy}
#: Fields that take one of a list of values, by the dataclass that holds them.
CHOICES: dict[tuple[type, str], tuple[str, ...]] = {
    (Budget, "early_stopping"): EARLY_STOPPING, (Budget, "schedule"): SCHEDULES, (TrainConfig, "loss"): LOSSES,
    (TrainConfig, "precision"): PRECISIONS, (DataSource, "shard_selection"): ("first", "random")}
#: What each top-level field is (the sections say it with their dataclass's docstring).
TOP: dict[str, str] = {
    "name": "the study's name (letters, digits, - and _): names its directories; default: the file's stem",
    "description": "one line on what the study asks",
    "extends": "a study file (relative to this one) or a shipped study's name whose fields this one takes",
    "space": "the search space: a YAML file (relative to the study), a shipped space's name, or inline",
    "data": "the training data (urls of shards, or synthetic with dir) and the eval sets",
    "text": "the text tower: a preset's name or its fields; default: the space's",
    "train": "the recipe: nas.train_config.TrainConfig fields (samples and rungs come from budget)",
    "objectives": "metric: max|min; one (a single-objective search) or several (a Pareto search)",
    "algorithm": "how candidates are proposed",
    "sampler": "keyword arguments of the Optuna sampler (tpe, nsga2, random)",
    "archs": "fixed and grid studies: the candidates, a list of presets, arch JSON files or arch mappings, or a "
             "mapping of label: arch",
    "groups": "labelled candidates that a report compares: group name: [labels]",
    "trials": "how many candidates to measure (fixed and grid: at most that many of the list)",
    "constraints": "on the analytic cost, on top of the space's: {image_gmacs: {max: 0.05}}",
    "seed": "the seed of the sampler and of a grid's order",
    "image_size": "listed candidates: the resolution every one is measured at",
}
_DATA_FIELDS: dict[str, dict[str, Any]] = {
    "synthetic": {"description": "write (once) and train on a synthetic captioned dataset; needs dir"},
    "dir": {"type": "string", "description": "where the synthetic data is written or found"},
    "zeroshot": {"type": "string", "description": "zero-shot eval set: a directory of class folders"},
    "retrieval": {"type": "string", "description": "retrieval eval set: shards of image-caption pairs"},
    "zeroshot_templates": {"type": "array", "items": {"type": "string"},
                           "description": "the zero-shot prompts, each with {} for the class name"},
    "workers": {"anyOf": [{"const": "auto"}, {"type": "integer", "minimum": 0}],
                "description": "data loader processes per trial (auto: from its CPUs)", "default": "auto"},
}


def study_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a study file."""
    properties: dict[str, Any] = {name: {"type": "string"} for name in ("name", "description", "extends")}
    properties["space"] = {"anyOf": [{"type": "string"}, {"type": "object"}]}
    properties["data"] = _data()
    properties["text"] = {"anyOf": [{"enum": sorted(PRESETS)}, _object(TextTower)]}
    properties["train"] = _object(TrainConfig, exclude=set(DERIVED_TRAIN_FIELDS))
    metrics = [*TRAINED, *COST_METRICS, *ZERO_COST]
    properties["objectives"] = {"type": "object", "minProperties": 1, "additionalProperties": False,
                                "properties": {m: {"enum": list(DIRECTIONS)} for m in metrics}}
    properties["algorithm"] = {"enum": list(ALGORITHMS), "default": "tpe"}
    properties["sampler"] = {"type": "object"}
    arch = {"anyOf": [{"type": "string"}, {"type": "object"}]}
    properties["archs"] = {"anyOf": [{"type": "array", "items": arch, "minItems": 1},
                                     {"type": "object", "additionalProperties": arch, "minProperties": 1}]}
    properties["groups"] = {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"},
                                                                       "minItems": 2}}
    properties["trials"] = {"type": "integer", "minimum": 1}
    bounds = {"type": "object", "properties": {"min": {"type": "number"}, "max": {"type": "number"}},
              "additionalProperties": False}
    properties["constraints"] = {"type": "object", "additionalProperties": bounds}
    properties["seed"] = {"type": "integer", "minimum": 0, "default": 0}
    properties["image_size"] = {"type": "integer", "minimum": 1}
    for name, kind in SECTIONS.items():
        properties[name] = _object(kind)
    for name, text in TOP.items():
        properties[name]["description"] = text
    for name in MERGED_SECTIONS:  # a study that extends another may give any of their fields alone
        for section in (properties[name], properties[name].get("properties", {}).get("synthetic", {})):
            section.pop("required", None)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "vitamin-nas study",
            "description": "A study file of vitamin-nas (`vitamin-nas search STUDY.yaml`); `vitamin-nas studies "
                           "--fields` lists the same fields.",
            "type": "object", "additionalProperties": False,
            "anyOf": [{"required": ["extends"]}, {"required": list(REQUIRED)}],  # a base study gives the rest
            "properties": {name: properties[name] for name in TOP_FIELDS}}


def schema_text() -> str:
    """The schema as the shipped file holds it."""
    return json.dumps(study_schema(), indent=2) + "\n"


def fields_reference() -> str:
    """Every field of a study file, one line each: its dotted place, type, default and what it is."""
    schema = study_schema()
    lines = ["A study file's fields, as `load_study` reads them (the JSON Schema of the same: vitamin-nas studies "
             "--schema).", ""]
    for name, spec in schema["properties"].items():
        lines += _lines(name, spec, 0, list(REQUIRED))
    return "\n".join(lines)


def _lines(name: str, spec: dict[str, Any], depth: int, required: list[str]) -> list[str]:
    default = f" = {json.dumps(spec['default'])}" if "default" in spec else ""
    text = spec.get("description", "")
    needed = (" (required, unless extends gives it)" if depth == 0 else " (required)") if name in required else ""
    line = f"{'  ' * depth}{name}: {_kind(spec)}{default}{needed}"
    lines = [f"{line}  # {text}" if text else line]
    section = _section(spec)
    if section is not None:
        for field, child in section.get("properties", {}).items():
            lines += _lines(field, child, depth + 1, section.get("required", []))
    return lines


def _section(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The mapping a field holds (its mapping form, when it may also be a name), when it has named fields."""
    for option in (spec, *spec.get("anyOf", ())):
        if option.get("type") == "object" and "properties" in option:
            return option
    return None


def _kind(spec: dict[str, Any]) -> str:
    if "enum" in spec:
        return " | ".join(map(str, spec["enum"])) if len(spec["enum"]) <= 8 else "a name"
    if "const" in spec:
        return json.dumps(spec["const"])
    if "anyOf" in spec:
        return " or ".join(_kind(option) for option in spec["anyOf"])
    kind = spec.get("type", "any")
    if kind == "array":
        return f"list of {_kind(spec.get('items', {}))}"
    if kind == "object" and "properties" in spec:
        return "mapping"
    return kind


def _data() -> dict[str, Any]:
    source = _object(DataSource, exclude=set(SETTINGS_FIELDS))
    properties = {**_DATA_FIELDS, **source["properties"]}
    properties["synthetic"] = {**_object(SynthConfig, exclude={"workers"}), **_DATA_FIELDS["synthetic"]}
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "description": source["description"]}


def _object(kind: type, exclude: set[str] = frozenset()) -> dict[str, Any]:
    """A dataclass as a mapping of its fields: each field's type (and choices) and default."""
    hints = typing.get_type_hints(kind)
    properties = {}
    required = []
    for field in dataclasses.fields(kind):
        if not field.init or field.name in exclude:
            continue
        spec = _json_type(hints[field.name])
        if (kind, field.name) in CHOICES:
            spec = {"enum": list(CHOICES[kind, field.name])}
        if field.default is not dataclasses.MISSING:
            spec["default"] = _default(field.default)
        elif field.default_factory is not dataclasses.MISSING and not dataclasses.is_dataclass(field.type):
            value = field.default_factory()
            if not dataclasses.is_dataclass(value):
                spec["default"] = _default(value)
        else:
            required.append(field.name)
        properties[field.name] = spec
    schema = {"type": "object", "additionalProperties": False, "properties": properties,
              "description": " ".join((kind.__doc__ or "").strip().split("\n\n")[0].split())}
    if required:
        schema["required"] = required
    return schema


def _default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _json_type(hint: Any) -> dict[str, Any]:
    """A Python type hint as JSON Schema (a dataclass as its mapping; Augment also by its preset's name)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [_json_type(a) for a in args if a is not type(None)]
        if type(None) in args:
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if hint is str:
        return {"type": "string"}
    if origin in (tuple, list):
        items = [a for a in args if a is not Ellipsis]
        spec: dict[str, Any] = {"type": "array", "items": _json_type(items[0]) if items else {}}
        if Ellipsis not in args and args:
            spec["minItems"] = spec["maxItems"] = len(args)
        return spec
    if origin is dict or hint is dict:
        return {"type": "object"}
    if hint is Augment:
        return {"anyOf": [{"type": "string"}, _object(Augment)]}
    if dataclasses.is_dataclass(hint):
        return _object(hint)
    return {}
