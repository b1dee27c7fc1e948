"""Ranking subnets by zero-shot accuracy with the weights they inherit from a trained supernet (BigNAS: no
retraining), each with its eval-set interval, and their Pareto front against image GMACs.

    supernet = load_supernet("runs/sn")
    records = rank(supernet, zeroshot_set("eval/zeroshot", supernet.image_size), sample_subnets(supernet, 1000))
    write_ranking(records, "runs/sn/rank")            # ranking.csv and pareto.csv

Accuracies and their intervals are `nas.evaluate`'s (the Wilson interval over the eval set's images, as every
trial's); the class embeddings are computed once, since the text tower is shared. A hybrid tower normalises with
LayerNorm only, so no subnet needs recalibrated batch-norm statistics before it is scored.
"""

from __future__ import annotations

import csv
import os
import random
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from nas.arch import Arch
from nas.errors import require_int
from nas.evaluate import Evaluation, encode_images, topk_hits, zero_shot_classifier
from nas.pareto import pareto_mask
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


def rank(supernet: Supernet, zeroshot: Any, archs: list[Arch], *, device: str | torch.device = "cpu",
         batch_size: int = 256, workers: int = 0, level: float = 0.95) -> list[dict[str, Any]]:
    """One record per subnet, best zero-shot top-1 first: its arch, cost, every zero-shot metric with `_low`,
    `_high` and `_n` (`Evaluation.flat`), and whether it is on the Pareto front (`pareto`).

    `zeroshot` is a `nas.data.ZeroShotSet` at the supernet's resolution; its images are decoded once."""
    from nas.data import tokenizer

    device = torch.device(device)
    supernet.to(device).eval()
    classifier = zero_shot_classifier(supernet, zeroshot.classnames, zeroshot.templates,
                                      tokenizer(context_length=supernet.text_tower.context_length), device)
    batches = list(DataLoader(zeroshot.dataset, batch_size=batch_size, shuffle=False, num_workers=workers))
    records = []
    for arch in archs:
        subnet = SimpleNamespace(encode_image=partial(supernet.encode_image, arch))  # what encode_images calls
        features, labels = encode_images(subnet, batches, device, batch_size=batch_size)
        hits = topk_hits(features @ classifier, labels.to(device))
        evaluation = Evaluation.from_hits({f"zeroshot_top{k}": value for k, value in hits.items()}, level=level)
        cost = supernet.cost(arch)
        records.append({"arch_id": arch.arch_id, "arch_name": arch.name(), "image_gmacs": cost.image_gmacs,
                        "image_params_m": cost.image_params / 1e6, **evaluation.flat(), "arch": arch.to_json()})
    front = pareto_mask(np.array([[-r[FRONT[0]], r[FRONT[1]]] for r in records]))
    for record, on_front in zip(records, front, strict=True):
        record["pareto"] = bool(on_front)
    return sorted(records, key=lambda r: -r["zeroshot_top1"])


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
