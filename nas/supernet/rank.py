"""Ranking subnets by zero-shot accuracy with the weights they inherit from a trained supernet (BigNAS: no
retraining), and by retrieval recall when there is a retrieval set, each with its eval-set interval, and their
Pareto front against image GMACs.

    supernet = load_supernet("runs/sn")
    records = rank(supernet, zeroshot_set("eval/zeroshot", supernet.image_size), sample_subnets(supernet, 1000),
                   retrieval_set("eval/retrieval", supernet.image_size))          # the retrieval set is optional
    write_ranking(records, "runs/sn/rank")            # ranking.csv and pareto.csv

Accuracies and their intervals are `nas.evaluate`'s (the Wilson interval over the eval set's images, as every
trial's, and a bootstrap over images for text-to-image recall); the class embeddings and the captions are
encoded once, since the text tower is shared (`SubnetScorer`, which `evolution` also scores with). A hybrid
tower normalises with LayerNorm only, so no subnet needs recalibrated batch-norm statistics before it is scored.
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from nas.arch import Arch
from nas.data import zeroshot_set
from nas.errors import ConfigError, require_int
from nas.evaluate import Evaluation, encode_images, encode_texts, retrieval_evaluation, topk_hits, zero_shot_classifier
from nas.metrics import SUPERNET, SUPERNET_SCORE
from nas.pareto import pareto_mask
from nas.study import Study
from nas.supernet.supernet import Supernet

RANKING_FILE = "ranking.csv"
PARETO_FILE = "pareto.csv"
#: The objectives of the front: zero-shot top-1 up, image GMACs (the paper's convention) down.
FRONT = ("zeroshot_top1", "image_gmacs")


def sample_subnets(supernet: Supernet, samples: int, seed: int = 0) -> list[Arch]:
    """`samples` distinct subnets drawn uniformly from the supernet's candidates (all of them when there are no
    more), in the space's order."""
    require_int(samples, "samples", low=1)
    chosen = set(random.Random(seed).sample(range(len(supernet.candidates)), min(samples, len(supernet.candidates))))
    return [arch for i, arch in enumerate(supernet.candidates) if i in chosen]


class SubnetScorer:
    """Scores subnets of one supernet with the weights they inherit: zero-shot top-1 and top-5 and, given a
    retrieval set, recall@k both ways, each with its interval (`nas.evaluate`'s). The text tower is shared, so the
    class embeddings and the captions are encoded once, and the eval images decoded once.

    `zeroshot` is a `nas.data.ZeroShotSet` and `retrieval` a `nas.data.RetrievalSet`, at the supernet's
    resolution."""

    def __init__(self, supernet: Supernet, zeroshot: Any, retrieval: Any = None, *,
                 device: str | torch.device = "cpu", batch_size: int = 256, workers: int = 0, level: float = 0.95):
        from nas.data import tokenizer as make_tokenizer

        self.supernet, self.device, self.level, self.batch_size = supernet, torch.device(device), level, batch_size
        self.retrieval = retrieval
        supernet.to(self.device).eval()
        tokenizer = make_tokenizer(context_length=supernet.text_tower.context_length)
        self.classifier = zero_shot_classifier(supernet, zeroshot.classnames, zeroshot.templates, tokenizer,
                                               self.device)
        self.batches = list(DataLoader(zeroshot.dataset, batch_size=batch_size, shuffle=False, num_workers=workers))
        if retrieval is not None:
            self.captions = encode_texts(supernet, retrieval.texts, tokenizer, self.device, batch_size=batch_size)
            self.pairs = list(DataLoader(retrieval.images, batch_size=batch_size, shuffle=False,
                                         num_workers=workers))

    def __call__(self, arch: Arch) -> dict[str, Any]:
        """The record of `arch`: its id, name, cost, every metric with `_low`, `_high` and `_n`
        (`Evaluation.flat`), and its JSON."""
        subnet = SimpleNamespace(encode_image=partial(self.supernet.encode_image, arch))  # what encode_images calls
        features, labels = encode_images(subnet, self.batches, self.device, batch_size=self.batch_size)
        hits = topk_hits(features @ self.classifier, labels.to(self.device))
        evaluation = Evaluation.from_hits({f"zeroshot_top{k}": value for k, value in hits.items()}, level=self.level)
        if self.retrieval is not None:
            images, _ = encode_images(subnet, self.pairs, self.device, batch_size=self.batch_size)
            evaluation |= retrieval_evaluation(images, self.captions, self.retrieval.text_to_image, self.level)
        cost = self.supernet.cost(arch)
        return {"arch_id": arch.arch_id, "arch_name": arch.name(), "image_gmacs": cost.image_gmacs,
                "image_params_m": cost.image_params / 1e6, **evaluation.flat(), "arch": arch.to_json()}


def rank(supernet: Supernet, zeroshot: Any, archs: list[Arch], retrieval: Any = None, *,
         device: str | torch.device = "cpu", batch_size: int = 256, workers: int = 0,
         level: float = 0.95) -> list[dict[str, Any]]:
    """One `SubnetScorer` record per subnet of `archs`, ranked (`ranked`)."""
    scorer = SubnetScorer(supernet, zeroshot, retrieval, device=device, batch_size=batch_size, workers=workers,
                          level=level)
    return ranked([scorer(arch) for arch in archs])


def ranked(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records best zero-shot top-1 first, each marked with whether it is on the Pareto front (`pareto`) of
    zero-shot top-1 against image GMACs."""
    front = pareto_mask(np.array([[-r[FRONT[0]], r[FRONT[1]]] for r in records]))
    for record, on_front in zip(records, front, strict=True):
        record["pareto"] = bool(on_front)
    return sorted(records, key=lambda r: -r["zeroshot_top1"])


def study_scorer(study: Study, run: str | os.PathLike, **options: Any) -> SubnetScorer:
    """A `SubnetScorer` of the supernet trained in `run` (its newest checkpoint) on the study's zero-shot set and
    prompts at the supernet's resolution: what scores a study's candidates as a proxy (`nas.metrics.SUPERNET`).
    `options` go to `SubnetScorer`."""
    from nas.supernet.training import load_supernet

    if study.data.zeroshot is None:
        raise ConfigError("the supernet's score needs the study's zero-shot set", source=study.source,
                          field="data.zeroshot")
    supernet = load_supernet(run)
    zeroshot = zeroshot_set(study.data.zeroshot, supernet.image_size, templates=study.data.zeroshot_templates)
    return SubnetScorer(supernet, zeroshot, **options)


def proxy_score(record: dict[str, Any]) -> dict[str, float]:
    """A `SubnetScorer` record's zero-shot top-1, its interval and n, named as the supernet's score of a candidate
    (`nas.metrics.SUPERNET_SCORE`)."""
    return {name: record[name.replace(SUPERNET, "zeroshot_top1")] for name in SUPERNET_SCORE}


def inherited_scores(scorer: SubnetScorer, archs: Iterable[Arch]) -> dict[str, dict[str, float]]:
    """The supernet's score (`proxy_score`) by arch id, of those of `archs` that are subnets of the scorer's supernet
    (the others have none)."""
    return {arch.arch_id: proxy_score(scorer(arch)) for arch in archs if scorer.supernet.holds(arch)}


def write_ranking(records: list[dict[str, Any]], out: str | os.PathLike) -> tuple[Path, Path]:
    """`out/ranking.csv` (every record, best first) and `out/pareto.csv` (the front, cheapest first)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    front = sorted((r for r in records if r["pareto"]), key=lambda r: r["image_gmacs"])
    paths = out / RANKING_FILE, out / PARETO_FILE
    for path, rows in zip(paths, (records, front), strict=True):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(rows)
    return paths
