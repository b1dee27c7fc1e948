"""The ViTamin paper's side of a report: its published benchmark, the cost of its ablation variants, and its
findings as checkable claims, read from a data file (`studies/paper/vitamin.yaml`), never from code."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from nas import shipped
from nas.errors import ConfigError

PAPER = shipped.PAPER
PAPER_FIELDS = ("paper", "source", "metric", "benchmark", "ablations", "models", "families", "claims")
BENCHMARK_FIELDS = ("model", "samples", "image_params_m", "image_gmacs", "imagenet", "avg38")
CLAIM_FIELDS = ("id", "text", "order", "monotonic", "labels", "paper")


@dataclass(frozen=True)
class Claim:
    """A finding of the paper. `order`: tiers of labels, best first (each label of a tier beats each of the
    next) at every budget. `monotonic`: the metric rises with samples_seen (each candidate), or with a cost
    column across `labels` at every budget. `paper`: the benchmark models a monotonic claim is checked on."""

    id: str
    text: str
    order: tuple[tuple[str, ...], ...] = ()
    monotonic: str | None = None
    labels: tuple[str, ...] = ()
    paper: tuple[str, ...] = ()

    @property
    def named(self) -> tuple[str, ...]:
        """The labels a study must have for the claim to apply to it."""
        return tuple(label for tier in self.order for label in tier) or self.labels


@dataclass(frozen=True)
class Paper:
    """The paper's published numbers (`benchmark`: one row per model and budget) and its claims."""

    title: str
    source: str
    metric: str
    benchmark: pd.DataFrame
    ablations: list[dict[str, Any]]
    models: dict[str, str]
    families: dict[str, list[str]]
    claims: list[Claim]

    def table(self, models: Sequence[str] | None = None) -> pd.DataFrame:
        """The metric by model (rows) and samples seen (columns), as fractions like a study's accuracies."""
        rows = self.benchmark if models is None else self.benchmark[self.benchmark.model.isin(models)]
        table = rows.pivot_table(index="model", columns="samples", values=self.metric).sort_index(axis=1) / 100
        return table.reindex([m for m in (models or table.index) if m in table.index])


def load_paper(path: str | os.PathLike = PAPER) -> Paper:
    """Read and check the paper's data file; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("no such file", source=str(path))
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ConfigError("a mapping", source=str(path))
    missing = [f for f in PAPER_FIELDS if f not in raw]
    if missing:
        raise ConfigError(f"missing field(s) {', '.join(missing)}", source=str(path))
    benchmark = pd.DataFrame.from_records(raw["benchmark"])
    if set(benchmark.columns) != set(BENCHMARK_FIELDS):
        raise ConfigError(f"rows need exactly {', '.join(BENCHMARK_FIELDS)}", source=str(path), field="benchmark")
    if raw["metric"] not in ("imagenet", "avg38"):
        raise ConfigError(f"{raw['metric']!r} is not one of imagenet, avg38", source=str(path), field="metric")
    known = set(benchmark.model)
    for where, models in [("models", list(raw["models"].values())), *((f"families.{k}", v) for k, v in
                                                                       raw["families"].items())]:
        unknown = sorted(set(models) - known)
        if unknown:
            raise ConfigError(f"not benchmark models: {', '.join(unknown)}", source=str(path), field=where)
    claims = [_claim(item, i, str(path), known) for i, item in enumerate(raw["claims"])]
    return Paper(str(raw["paper"]), str(raw["source"]), raw["metric"], benchmark, list(raw["ablations"]),
                 dict(raw["models"]), dict(raw["families"]), claims)


def _claim(item: Any, index: int, source: str, models: set[str]) -> Claim:
    where = f"claims[{index}]"
    if not isinstance(item, dict) or set(item) - set(CLAIM_FIELDS) or not {"id", "text"} <= set(item):
        raise ConfigError(f"a mapping with id, text and order or monotonic (fields: {', '.join(CLAIM_FIELDS)})",
                          source=source, field=where)
    if ("order" in item) == ("monotonic" in item):
        raise ConfigError("give exactly one of order and monotonic", source=source, field=where)
    order = tuple(tuple(tier) if isinstance(tier, list) else (tier,) for tier in item.get("order", ()))
    if "order" in item and len(order) < 2:
        raise ConfigError("an order needs at least two tiers", source=source, field=f"{where}.order")
    unknown = sorted(set(item.get("paper", ())) - models)
    if unknown:
        raise ConfigError(f"not benchmark models: {', '.join(unknown)}", source=source, field=f"{where}.paper")
    return Claim(str(item["id"]), str(item["text"]), order, item.get("monotonic"), tuple(item.get("labels", ())),
                 tuple(item.get("paper", ())))

