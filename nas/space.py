"""`SearchSpace`: a YAML description of which `Arch`s a search may propose, and the constraints they must meet.

A space file has top-level fields (`image_size`, `base_width`, `embed_dim`, `pos_embed`, `pool`, `stem`), a
list of 2D `stages`, a `transformer` section (left out for ConvNeXt and CoAtNet towers, see `nas.arch`), an
optional fixed `text` tower (used for costing) and `constraints`. Each value is a *domain*:

* a scalar: fixed;
* a list: a categorical choice;
* `{low: 2, high: 6, step: 2}` (`log: true` allowed): an integer range, or a float range when a bound is a
  float (float ranges need `step` to be enumerable);
* `{by: FIELD, values: {CHOICE: DOMAIN, ...}}`: a conditional domain that depends on the value of an earlier
  field of the same section (e.g. the kernel depends on the block type, the MLP ratio on the MLP type).

Widths are absolute (`width`) or multiples of `base_width` (`width_mult`); heads are `heads` or `head_dim`.
Every choice is a named parameter (`stages.1.depth`, `transformer.mlp_ratio[geglu]`), so the same space
drives Optuna's define-by-run API (`suggest`), random sampling (`sample`) and exhaustive enumeration.
Constraints are checked on the analytic cost (`nas.cost`), before any model is built.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.arch import ATTENTION_BLOCKS, MLP_TYPES, POOLS, POS_EMBEDS, STAGE_BLOCKS, STEMS, Arch, Stage, Transformer
from nas.cost import Cost, cost
from nas.errors import ConfigError, load_yaml
from nas.presets import TextTower

TOP_FIELDS = ("name", "description", "image_size", "base_width", "stem", "stem_width", "stem_mult", "patch_size",
              "embed_dim", "pos_embed", "pool", "stages", "transformer", "text", "constraints")
STAGE_FIELDS = ("block", "depth", "width", "width_mult", "expansion", "kernel", "heads", "head_dim", "mlp")
TRANSFORMER_FIELDS = ("width", "width_mult", "depth", "heads", "head_dim", "mlp", "mlp_ratio")
TEXT_FIELDS = ("width", "layers", "heads", "context_length", "vocab_size", "mlp_ratio")
CONSTRAINT_FIELDS = ("image_gmacs", "image_params_m", "train_memory_gib")
#: Values a field may take, where the field has a closed set.
ALLOWED = {"block": STAGE_BLOCKS, "mlp": MLP_TYPES, "stem": STEMS, "pos_embed": POS_EMBEDS, "pool": POOLS}
#: Fields that count something (channels, blocks, pixels, heads): whole numbers above zero.
INTEGER_FIELDS = ("image_size", "base_width", "stem_width", "patch_size", "embed_dim", "depth", "width", "kernel",
                  "heads", "head_dim")
#: Fields that scale something (a width multiple, an expansion or MLP ratio): numbers above zero.
NUMBER_FIELDS = ("stem_mult", "width_mult", "expansion", "mlp_ratio")
#: Stage fields that only apply to some block types.
_CONV_ONLY, _ATTENTION_ONLY = ("kernel",), ("heads", "head_dim", "mlp")


@dataclass(frozen=True)
class Domain:
    """The values one parameter may take: a finite tuple, or an integer/float range."""

    values: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    @property
    def finite(self) -> bool:
        return self.values is not None or self.step is not None or self.is_int

    @property
    def is_int(self) -> bool:
        return self.values is None and isinstance(self.low, int) and isinstance(self.high, int) \
            and (self.step is None or isinstance(self.step, int))

    def options(self) -> tuple[Any, ...]:
        """Every value, in order (finite domains only)."""
        if self.values is not None:
            return self.values
        step = self.step or 1
        count = int(round((self.high - self.low) / step)) + 1
        return tuple(self.low + i * step if self.is_int else round(self.low + i * step, 10) for i in range(count))

    def sample(self, rng: random.Random) -> Any:
        if self.finite:
            return rng.choice(self.options())
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)

    def suggest(self, trial: Any, name: str) -> Any:
        if self.values is not None:
            return trial.suggest_categorical(name, list(self.values))
        if self.is_int:
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class Param:
    """One field of a section: fixed, chosen from a domain, or chosen from a domain that depends on `by`."""

    name: str
    field: str
    domains: dict[Any, Domain]  # {None: domain} when unconditional
    by: str | None = None

    def domain(self, known: dict[str, Any]) -> Domain | None:
        """The domain given the values chosen so far (None if this field does not apply to them)."""
        return self.domains.get(known[self.by]) if self.by else self.domains[None]

    def param_name(self, known: dict[str, Any]) -> str:
        # Optuna wants one distribution per name: conditional branches get their own names.
        return f"{self.name}[{known[self.by]}]" if self.by else self.name


Chooser = Callable[[str, Domain], Any]


@dataclass(frozen=True)
class Constraint:
    low: float | None = None
    high: float | None = None
    batch: int = 256

    def value(self, measured: float) -> float:
        """Optuna's convention: <= 0 means satisfied; the size of a positive value is the violation."""
        low = -math.inf if self.low is None else self.low - measured
        high = -math.inf if self.high is None else measured - self.high
        return max(low, high)


class SearchSpace:
    """A parametric space of image towers. Picklable: `space.suggest` can be Ray Tune's define-by-run space."""

    def __init__(self, spec: dict[str, Any], source: str = "<space>"):
        self.source = source
        self.spec = spec
        self.name = str(spec.get("name", Path(source).stem))
        self.description = str(spec.get("description", ""))
        self._check_fields(spec, TOP_FIELDS, "")
        self.top = self._section(spec, [f for f in TOP_FIELDS if f not in
                                        ("name", "description", "stages", "transformer", "text", "constraints")], "")
        stages = spec.get("stages", [])
        if not isinstance(stages, list):
            raise self._error("a list of stage sections", "stages")
        self.stages = [self._stage_section(s, i) for i, s in enumerate(stages)]
        if not self.stages and "transformer" not in spec:
            raise self._error("missing: a tower needs a Transformer stage, 2D stages or both", "transformer")
        self.transformer: list[Param] | None = None  # None: ConvNeXt and CoAtNet towers
        if "transformer" in spec:
            self._check_fields(spec["transformer"], TRANSFORMER_FIELDS, "transformer")
            self.transformer = self._section(spec["transformer"], TRANSFORMER_FIELDS, "transformer")
        self.text = self._text(spec.get("text") or {})
        self.constraints = self._constraints(spec.get("constraints") or {})
        self._check_sections()

    # ---- loading -------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("no such file", source=str(path))
        spec = load_yaml(path)
        if not isinstance(spec, dict):
            raise ConfigError("a search space is a YAML mapping", source=str(path))
        return cls(spec, str(path))

    def __reduce__(self) -> tuple:
        return (SearchSpace, (self.spec, self.source))

    def _error(self, message: str, field: str) -> ConfigError:
        return ConfigError(message, source=self.source, field=field)

    def _check_fields(self, section: Any, allowed: tuple[str, ...], where: str) -> None:
        if not isinstance(section, dict):
            raise self._error("expected a mapping", where or "<top>")
        for key in section:
            if key not in allowed:
                raise self._error(f"unknown field; allowed: {', '.join(allowed)}", _join(where, key))

    def _domain(self, raw: Any, where: str, field: str) -> Domain:
        if isinstance(raw, dict):
            unknown = set(raw) - {"low", "high", "step", "log"}
            if unknown or not {"low", "high"} <= set(raw):
                raise self._error("a range is {low: X, high: Y} with optional step and log", where)
            if field not in INTEGER_FIELDS + NUMBER_FIELDS:
                raise self._error(f"takes one of {', '.join(ALLOWED[field])} or a list of them, not a range", where)
            low, high, step = raw["low"], raw["high"], raw.get("step")
            for name, value in (("low", low), ("high", high)):
                self._check_type(value, where, field, f"{name}: ")
            if low > high:
                raise self._error(f"bad range low={low!r} high={high!r}", where)
            if step is not None:
                self._check_type(step, where, field, "step: ")
            if not isinstance(raw.get("log", False), bool):
                raise self._error(f"log: {raw['log']!r} is not true or false", where)
            return Domain(low=low, high=high, step=step, log=bool(raw.get("log", False)))
        values = tuple(raw) if isinstance(raw, list) else (raw,)
        if not values:
            raise self._error("an empty list of choices", where)
        for value in values:
            self._check_type(value, where, field)
        return Domain(values=values)

    def _check_type(self, value: Any, where: str, field: str, what: str = "") -> None:
        """Every value of a field has the field's type, so that no candidate fails later, inside a trial."""
        allowed = ALLOWED.get(field)
        if allowed:
            if value not in allowed:
                raise self._error(f"{what}{value!r} is not one of {', '.join(allowed)}", where)
            return
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if field in INTEGER_FIELDS and not (number and isinstance(value, int) and value > 0):
            raise self._error(f"{what}{value!r} is not a positive integer; {field} takes positive integers (one, a "
                              "list of them or a range {low, high, step})", where)
        if field in NUMBER_FIELDS and not (number and value > 0):
            raise self._error(f"{what}{value!r} is not a positive number; {field} takes positive numbers (one, a "
                              "list of them or a range {low, high, step})", where)

    def _section(self, section: dict[str, Any], fields: Any, where: str) -> list[Param]:
        params: list[Param] = []
        outer = [p.field for p in getattr(self, "top", [])]  # a stage or the transformer may depend on these
        for field in fields:
            if field not in section:
                continue
            raw, name = section[field], _join(where, field)
            if isinstance(raw, dict) and "by" in raw:
                by, values = raw.get("by"), raw.get("values")
                earlier = outer + [p.field for p in params]
                if by not in earlier or not isinstance(values, dict) or set(raw) != {"by", "values"}:
                    raise self._error(f"a conditional domain is {{by: FIELD, values: {{CHOICE: DOMAIN}}}} with FIELD "
                                      f"an earlier field of this section or a top-level field "
                                      f"({', '.join(earlier) or 'none'})", name)
                domains = {k: self._domain(v, f"{name}.values.{k}", field) for k, v in values.items()}
                params.append(Param(name, field, domains, by))
            else:
                params.append(Param(name, field, {None: self._domain(raw, name, field)}))
        return params

    def _stage_section(self, raw: Any, index: int) -> list[Param]:
        where = f"stages[{index}]"
        self._check_fields(raw, STAGE_FIELDS, where)
        for required in ("block", "depth"):
            if required not in raw:
                raise self._error("missing", _join(where, required))
        if ("width" in raw) == ("width_mult" in raw):
            raise self._error("give exactly one of width, width_mult", where)
        return self._section(raw, STAGE_FIELDS, f"stages.{index}")

    def _text(self, raw: Any) -> TextTower:
        self._check_fields(raw, TEXT_FIELDS, "text")
        for key, value in raw.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            if not number or (key != "mlp_ratio" and not isinstance(value, int)):
                kind = "a positive number" if key == "mlp_ratio" else "a positive integer"
                raise self._error(f"{value!r} is not {kind}", f"text.{key}")
        try:
            return TextTower(**raw)
        except (TypeError, ConfigError) as err:
            raise self._error(str(err), "text") from None

    def _constraints(self, raw: Any) -> dict[str, Constraint]:
        self._check_fields(raw, CONSTRAINT_FIELDS, "constraints")
        out = {}
        for key, value in raw.items():
            where = f"constraints.{key}"
            allowed = {"min", "max"} | ({"batch"} if key == "train_memory_gib" else set())
            if not isinstance(value, dict) or not value or set(value) - allowed:
                raise self._error(f"expected a mapping with {', '.join(sorted(allowed))}", where)
            for bound in ("min", "max"):
                if not isinstance(value.get(bound, 0), (int, float)) or isinstance(value.get(bound), bool):
                    raise self._error(f"{bound}: {value[bound]!r} is not a number", where)
            batch = value.get("batch", 256)
            if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
                raise self._error(f"batch: {batch!r} is not a positive integer", where)
            out[key] = Constraint(value.get("min"), value.get("max"), batch)
        return out

    def _check_sections(self) -> None:
        fields = {p.field for p in self.top}
        needs_base = any(p.field == "width_mult" for s in self.stages for p in s) or \
            any(p.field == "width_mult" for p in self.transformer or ()) or "stem_mult" in fields
        if needs_base and "base_width" not in fields:
            raise self._error("width_mult/stem_mult need a base_width", "base_width")
        if self.transformer is None:
            return
        tfields = {p.field for p in self.transformer}
        for required, alternatives in (("depth", ("depth",)), ("width", ("width", "width_mult")),
                                       ("heads", ("heads", "head_dim"))):
            if not tfields & set(alternatives):
                raise self._error(f"give {' or '.join(alternatives)}", f"transformer.{required}")
        # Every combination must be walkable: building each enumerated arch checks the rest (see tests).

    # ---- walking ---------------------------------------------------------------------------------------------
    def _walk(self, choose: Chooser) -> Arch:
        top = _choose(self.top, choose, _never, {})
        stages = [_choose(s, choose, _stage_skip, top) for s in self.stages]
        return self._build(top, stages, _choose(self.transformer, choose, _never, top) if self.transformer else None)

    def _build(self, top: dict, stages: list[dict], tf: dict | None) -> Arch:
        base = top.get("base_width")

        def width(section: dict) -> int:
            return int(section["width"]) if "width" in section else int(round(section["width_mult"] * base))

        def heads(section: dict, w: int) -> int:
            if "heads" in section:
                return int(section["heads"])
            if w % int(section["head_dim"]):
                raise ConfigError(f"width {w} is not a multiple of head_dim {section['head_dim']}", field="head_dim")
            return w // int(section["head_dim"])

        built_stages = []
        for s in stages:
            w = width(s)
            attention = s["block"] in ATTENTION_BLOCKS
            built_stages.append(Stage(
                block=s["block"], depth=int(s["depth"]), width=w, expansion=float(s.get("expansion", 4.0)),
                kernel=None if attention else s.get("kernel"), heads=heads(s, w) if attention else None,
                mlp=s.get("mlp") if attention else None))
        transformer = None
        if tf is not None:
            tw = width(tf)
            transformer = Transformer(width=tw, depth=int(tf["depth"]), heads=heads(tf, tw),
                                      mlp=tf.get("mlp", "geglu"), mlp_ratio=tf.get("mlp_ratio"))
        stem = top.get("stem", "conv")
        stem_width = None
        if stem == "conv":
            stem_width = int(top["stem_width"]) if "stem_width" in top else \
                int(round(top.get("stem_mult", 1) * base)) if base else built_stages[0].width
        return Arch(transformer=transformer, stages=tuple(built_stages), stem=stem, stem_width=stem_width,
                    patch_size=top.get("patch_size"), image_size=int(top.get("image_size", 224)),
                    pos_embed=top.get("pos_embed"), pool=top.get("pool", "avg"),
                    embed_dim=int(top.get("embed_dim", 512)))

    # ---- the public API --------------------------------------------------------------------------------------
    def suggest(self, trial: Any) -> Arch:
        """Define-by-run: ask an Optuna trial for every parameter and return the arch.

        The arch's JSON, id and constraint values are stored as the trial's user attributes
        (`arch`, `arch_id`, `constraints`) so that a sampler's `constraints_func` (`optuna_constraints`) and
        a results database can read them. An invalid combination raises `ConfigError` naming the field.
        """
        arch = self._walk(lambda name, domain: domain.suggest(trial, name))
        trial.set_user_attr("arch", arch.to_json())
        trial.set_user_attr("arch_id", arch.arch_id)
        trial.set_user_attr("constraints", self.constraint_values(arch))
        return arch

    def sample(self, rng: random.Random | int | None = None, feasible: bool = True, max_tries: int = 10_000) -> Arch:
        """A random arch (uniform per parameter); with `feasible`, rejection-sampled until constraints hold."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        for _ in range(max_tries):
            try:
                arch = self._walk(lambda name, domain: domain.sample(rng))
            except ConfigError:
                continue
            if not feasible or self.is_feasible(arch):
                return arch
        raise ConfigError(f"no feasible arch in {max_tries} samples: the constraints may exclude the whole space",
                          source=self.source, field="constraints")

    def params(self) -> Iterator[tuple[str, Domain]]:
        """Every parameter name and domain of the space (conditional branches listed separately)."""
        for param in [*self.top, *itertools.chain(*self.stages), *(self.transformer or ())]:
            for key, domain in param.domains.items():
                yield (param.name if key is None else f"{param.name}[{key}]"), domain

    @property
    def finite(self) -> bool:
        return all(domain.finite for _, domain in self.params())

    def size(self) -> int:
        """The number of parameter combinations (before constraints). Finite spaces only."""
        self._require_finite()
        total = 0
        for top in _assignments(self.top, _never, {}):
            total += math.prod(sum(1 for _ in _assignments(params, skip, top)) for params, skip in self._sections())
        return total

    def enumerate(self, feasible: bool = True) -> Iterator[Arch]:
        """Every arch of a finite space, in a fixed order; with `feasible`, only those meeting constraints."""
        self._require_finite()
        for top in _assignments(self.top, _never, {}):
            sections = [list(_assignments(params, skip, top)) for params, skip in self._sections()]
            for chosen in itertools.product(*sections):
                stages, tf = (chosen[:-1], chosen[-1]) if self.transformer else (chosen, None)
                try:
                    arch = self._build(top, list(stages), tf)
                except ConfigError:
                    continue
                if not feasible or self.is_feasible(arch):
                    yield arch

    def contains(self, arch: Arch) -> bool:
        """Whether some choice of parameters yields exactly `arch` (constraints not considered)."""
        base = next((p for p in self.top if p.field == "base_width"), None)
        for base_width in base.domains[None].options() if base else (None,):
            values = _arch_values(arch, base_width)
            try:
                if self._walk(functools.partial(_pick, values)) == arch:
                    return True
            except (_NotInSpace, ConfigError):
                continue
        return False

    def cost(self, arch: Arch) -> Cost:
        return cost(arch, self.text)

    def measures(self, arch: Arch, cost: Cost | None = None) -> dict[str, float]:
        """The constrained quantities of `arch` (from its `cost` when the caller has it), by constraint name."""
        c = cost or self.cost(arch)
        values = {"image_gmacs": c.image_gmacs, "image_params_m": c.image_params / 1e6}
        if "train_memory_gib" in self.constraints:
            values["train_memory_gib"] = c.train_memory_bytes(self.constraints["train_memory_gib"].batch) / 2**30
        return values

    def constraint_values(self, arch: Arch, cost: Cost | None = None) -> list[float]:
        """One value per constraint, <= 0 when satisfied (Optuna's `constraints_func` convention)."""
        measured = self.measures(arch, cost)
        return [k.value(measured[name]) for name, k in self.constraints.items()]

    def violations(self, arch: Arch, cost: Cost | None = None) -> list[str]:
        """Human-readable constraint violations, e.g. `image_gmacs 91.20 > max 80`."""
        measured, out = self.measures(arch, cost), []
        for name, k in self.constraints.items():
            if k.low is not None and measured[name] < k.low:
                out.append(f"{name} {measured[name]:.2f} < min {k.low}")
            if k.high is not None and measured[name] > k.high:
                out.append(f"{name} {measured[name]:.2f} > max {k.high}")
        return out

    def is_feasible(self, arch: Arch) -> bool:
        return all(v <= 0 for v in self.constraint_values(arch))

    # ---- internals -----------------------------------------------------------------------------------------
    def _sections(self) -> list[tuple[list[Param], Callable]]:
        """The stage and transformer sections, each with its rule for fields that do not apply."""
        transformer = [(self.transformer, _never)] if self.transformer else []
        return [*[(s, _stage_skip) for s in self.stages], *transformer]

    def _require_finite(self) -> None:
        if not self.finite:
            infinite = [name for name, d in self.params() if not d.finite]
            raise self._error("not finite: give a step to float ranges to enumerate", infinite[0])


class _NotInSpace(Exception):
    pass


def _join(where: str, field: str) -> str:
    return f"{where}.{field}" if where else field


def _stage_skip(field: str, chosen: dict) -> bool:
    attention = chosen.get("block") in ATTENTION_BLOCKS
    return (attention and field in _CONV_ONLY) or (not attention and field in _ATTENTION_ONLY)


def _never(field: str, chosen: dict) -> bool:
    return False


def _choose(params: list[Param], choose: Chooser, skip: Callable, outer: dict) -> dict:
    """Choose a section's parameters in order; conditional domains see the section's and the outer choices."""
    chosen: dict[str, Any] = {}
    for param in params:
        domain = None if skip(param.field, chosen) else param.domain({**outer, **chosen})
        if domain is not None:
            chosen[param.field] = choose(param.param_name({**outer, **chosen}), domain)
    return chosen


def _assignments(params: list[Param], skip: Callable, outer: dict) -> Iterator[dict]:
    """Every assignment of a section's parameters (conditional domains followed)."""

    def walk(i: int, chosen: dict) -> Iterator[dict]:
        if i == len(params):
            yield dict(chosen)
            return
        param = params[i]
        domain = None if skip(param.field, chosen) else param.domain({**outer, **chosen})
        if domain is None:
            yield from walk(i + 1, chosen)
            return
        for value in domain.options():
            chosen[param.field] = value
            yield from walk(i + 1, chosen)
            del chosen[param.field]

    return walk(0, {})


def _arch_values(arch: Arch, base: int | None) -> dict[str, Any]:
    """Parameter values that could have produced `arch` for a given base width (checked by re-walking)."""
    values: dict[str, Any] = {"base_width": base}
    for field in ("image_size", "stem", "patch_size", "embed_dim", "pos_embed", "pool", "stem_width"):
        values[field] = getattr(arch, field)
    if base and arch.stem_width:
        values["stem_mult"] = arch.stem_width / base
    for i, stage in enumerate(arch.stages):
        _fill_section(values, f"stages.{i}", stage.width, base, stage.heads, dict(
            block=stage.block, depth=stage.depth, expansion=stage.expansion, kernel=stage.kernel, mlp=stage.mlp))
    t = arch.transformer
    if t is not None:
        _fill_section(values, "transformer", t.width, base, t.heads,
                      dict(depth=t.depth, mlp=t.mlp, mlp_ratio=t.mlp_ratio))
    return values


def _fill_section(values: dict, where: str, width: int, base: int | None, heads: int | None, fields: dict) -> None:
    for key, value in fields.items():
        values[f"{where}.{key}"] = value
    values[f"{where}.width"] = width
    if base:
        values[f"{where}.width_mult"] = width / base
    if heads:
        values[f"{where}.heads"] = heads
        values[f"{where}.head_dim"] = width // heads


def _pick(values: dict, name: str, domain: Domain) -> Any:
    key = name.split("[")[0]
    if key not in values:
        raise _NotInSpace
    value = values[key]
    if domain.values is not None:
        matches = [v for v in domain.values if v == value]
        if not matches:
            raise _NotInSpace
        return matches[0]
    if not domain.low <= value <= domain.high:
        raise _NotInSpace
    return value
