"""Zero-shot classification and image-text retrieval of a CLIP model, as open_clip and CLIP_benchmark do them.

Zero-shot: the class-name embeddings are averaged over prompt templates (open_clip's
`build_zero_shot_classifier`, computed once per evaluation), images are classified by cosine similarity,
and top-1/top-5 accuracy is reported. Retrieval: recall@k in both directions over held-out pairs, where
an image may have several captions; image-to-text counts a hit when any of the image's captions is in the
top k, text-to-image when the caption's image is.

Everything runs batched, under `torch.no_grad()` and (on GPU) bf16 autocast, with the model in eval mode.
The metric functions (`topk_accuracy`, `retrieval_recall`, and their per-item `topk_hits`, `retrieval_hits`) take
embeddings, so they can be checked on constructed ones.

An evaluation is an `Evaluation`: every metric with the number of items it rests on, its 95 % interval and
its per-item hits (for paired comparisons of two models on the same items, `nas.uncertainty`). Top-k and
image-to-text recall are proportions over independent items (Wilson interval); text-to-image recall is a
mean over captions that share images, so its interval comes from resampling images (`bootstrap_recall_interval`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from open_clip import build_zero_shot_classifier
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nas.metrics import RETRIEVAL_KS, ZEROSHOT_KS
from nas.uncertainty import bootstrap_recall_interval, pack_hits, wilson_interval


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = ZEROSHOT_KS) -> dict[int, torch.Tensor]:
    """Per row, whether its label is among the k highest logits, for each k (k capped at the classes)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels.view(-1, 1)
    return {k: hits[:, :k].any(dim=1) for k in ks}


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = ZEROSHOT_KS) -> dict[int, float]:
    """Fraction of rows whose label is among the k highest logits, for each k (k capped at the classes)."""
    return {k: hits.float().mean().item() for k, hits in topk_hits(logits, labels, ks).items()}


def retrieval_hits(image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: torch.Tensor,
                   ks: Sequence[int] = RETRIEVAL_KS) -> dict[str, torch.Tensor]:
    """Per image (image-to-text) and per caption (text-to-image), whether retrieval@k finds a match;
    `text_to_image[t]` is the index of caption t's image (images may have several)."""
    similarity = image_features @ text_features.T  # (images, texts)
    text_to_image = text_to_image.to(similarity.device)
    k_max = max(ks)
    hits = {}
    top_texts = similarity.topk(min(k_max, similarity.shape[1]), dim=1).indices  # (images, k)
    owner = text_to_image[top_texts] == torch.arange(len(similarity), device=similarity.device).view(-1, 1)
    for k in ks:
        hits[f"image_to_text_R@{k}"] = owner[:, :k].any(dim=1)
    top_images = similarity.T.topk(min(k_max, similarity.shape[0]), dim=1).indices  # (texts, k)
    found = top_images == text_to_image.view(-1, 1)
    for k in ks:
        hits[f"text_to_image_R@{k}"] = found[:, :k].any(dim=1)
    return hits


def retrieval_recall(image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: torch.Tensor,
                     ks: Sequence[int] = RETRIEVAL_KS) -> dict[str, float]:
    """Recall@k both ways; `text_to_image[t]` is the index of caption t's image (images may have several)."""
    return {name: hits.float().mean().item()
            for name, hits in retrieval_hits(image_features, text_features, text_to_image, ks).items()}


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: each metric, the number of items it rests on (`n`), its interval at the evaluation's
    level and its per-item hits (`hits[m]` has `n[m]` entries; text-to-image recall's are per caption)."""

    metrics: dict[str, float]
    n: dict[str, int]
    intervals: dict[str, tuple[float, float]]
    hits: dict[str, np.ndarray]
    chance: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("n", "intervals", "hits"):
            if set(getattr(self, name)) != set(self.metrics):
                raise ValueError(f"Evaluation.{name} must name the same metrics as Evaluation.metrics")
        if not set(self.chance) <= set(self.metrics):
            raise ValueError("Evaluation.chance names metrics the evaluation does not have")

    @classmethod
    def from_hits(cls, hits: Mapping[str, Any], images: Mapping[str, Any] | None = None,
                  level: float = 0.95, chance: Mapping[str, float] | None = None) -> Evaluation:
        """Metrics of per-item hits: a Wilson interval, or, for a metric in `images` (item -> its image),
        the interval of a bootstrap over images. `chance` is each metric's expected value under guessing."""
        images = images or {}
        metrics, n, intervals, arrays = {}, {}, {}, {}
        for name, values in hits.items():
            values = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values, dtype=bool)
            arrays[name], n[name] = values, len(values)
            metrics[name] = float(values.mean()) if len(values) else float("nan")
            intervals[name] = (bootstrap_recall_interval(values, images[name], level=level) if name in images
                               else wilson_interval(int(values.sum()), len(values), level))
        return cls(metrics, n, intervals, arrays, dict(chance or {}))

    def __or__(self, other: Evaluation) -> Evaluation:
        return Evaluation({**self.metrics, **other.metrics}, {**self.n, **other.n},
                          {**self.intervals, **other.intervals}, {**self.hits, **other.hits},
                          {**self.chance, **other.chance})

    def flat(self) -> dict[str, float | int]:
        """Numbers only (what a Ray Tune report and the results database take): every metric, and for each
        its `_n`, `_low` and `_high` (and `_chance`, what guessing scores, where it is known)."""
        flat: dict[str, float | int] = {}
        for name, value in self.metrics.items():
            low, high = self.intervals[name]
            flat.update({name: value, f"{name}_n": self.n[name], f"{name}_low": low, f"{name}_high": high})
            if name in self.chance:
                flat[f"{name}_chance"] = self.chance[name]
        return flat

    def packed_hits(self) -> dict[str, str]:
        """Every metric's hits as `nas.uncertainty.pack_hits` text (unpack with `n[metric]` items)."""
        return {name: pack_hits(values) for name, values in self.hits.items()}


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _image_batches(images: Any, batch_size: int, workers: int) -> Iterator[Any]:
    """Batches from a tensor (N, 3, H, W), a map-style dataset (decoded by `workers`) or an iterable of batches."""
    if isinstance(images, torch.Tensor):
        yield from images.split(batch_size)
    elif isinstance(images, Dataset):
        yield from DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=workers)
    else:
        yield from images


def encode_images(model: nn.Module, images: Any, device: torch.device, bf16: bool = False, batch_size: int = 256,
                  workers: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """L2-normalised image embeddings (fp32) and, when batches come as (images, labels), the labels."""
    features, labels = [], []
    with torch.no_grad(), _autocast(device, bf16):
        for batch in _image_batches(images, batch_size, workers):
            pixels, *rest = batch if isinstance(batch, (tuple, list)) else (batch,)
            if rest:
                labels.append(torch.as_tensor(rest[0]))
            features.append(model.encode_image(pixels.to(device), normalize=True).float())
    return torch.cat(features), torch.cat(labels) if labels else None


def encode_texts(model: nn.Module, texts: Sequence[str], tokenizer: Callable, device: torch.device,
                 bf16: bool = False, batch_size: int = 256) -> torch.Tensor:
    features = []
    with torch.no_grad(), _autocast(device, bf16):
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[start : start + batch_size])).to(device)
            features.append(model.encode_text(tokens, normalize=True).float())
    return torch.cat(features)


def zero_shot_classifier(model: nn.Module, classnames: Sequence[str], templates: Sequence[str | Callable],
                         tokenizer: Callable, device: torch.device, bf16: bool = False) -> torch.Tensor:
    """(embed_dim, classes) class embeddings, template-averaged and normalised (open_clip's builder)."""
    with _autocast(device, bf16):
        return build_zero_shot_classifier(model, tokenizer, list(classnames), list(templates),
                                          num_classes_per_batch=10, device=device).float()


def zeroshot_metrics(model: nn.Module, images: Any, classnames: Sequence[str], templates: Sequence[str | Callable],
                     tokenizer: Callable, device: torch.device, bf16: bool = False, batch_size: int = 256,
                     workers: int = 0, level: float = 0.95) -> Evaluation:
    """Top-1 and top-5 zero-shot accuracy; `images` yields (images, labels) batches or is such a dataset."""
    classifier = zero_shot_classifier(model, classnames, templates, tokenizer, device, bf16)
    features, labels = encode_images(model, images, device, bf16, batch_size, workers)
    if labels is None:
        raise ValueError("zero-shot images must come with labels: (images, labels) pairs")
    hits = topk_hits(features @ classifier, labels.to(features.device), ZEROSHOT_KS)
    classes = classifier.shape[1]
    return Evaluation.from_hits({f"zeroshot_top{k}": value for k, value in hits.items()}, level=level,
                                chance={f"zeroshot_top{k}": min(k, classes) / classes for k in hits})


def retrieval_metrics(model: nn.Module, images: Any, texts: Sequence[str], text_to_image: Sequence[int],
                      tokenizer: Callable, device: torch.device, bf16: bool = False, batch_size: int = 256,
                      workers: int = 0, level: float = 0.95) -> Evaluation:
    """Recall@1/5/10 both ways over held-out pairs (`text_to_image[t]`: index of caption t's image)."""
    image_features, _ = encode_images(model, images, device, bf16, batch_size, workers)
    text_features = encode_texts(model, texts, tokenizer, device, bf16, batch_size)
    return retrieval_evaluation(image_features, text_features, text_to_image, level)


def retrieval_evaluation(image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: Sequence[int],
                         level: float = 0.95) -> Evaluation:
    """Recall@1/5/10 both ways of encoded pairs, with intervals (a text-to-image recall's clustered by image)
    and chance levels; for callers that encode the captions once and the images of many towers."""
    owners = torch.as_tensor(list(text_to_image))
    hits = retrieval_hits(image_features, text_features, owners, RETRIEVAL_KS)
    return Evaluation.from_hits(hits, {f"text_to_image_R@{k}": owners.numpy() for k in RETRIEVAL_KS}, level,
                                retrieval_chance(owners.numpy(), len(image_features)))


def retrieval_chance(text_to_image: np.ndarray, images: int, ks: Sequence[int] = RETRIEVAL_KS) -> dict[str, float]:
    """Recall@k of a random ranking: text-to-image finds its one image among `images` with probability k/images;
    image-to-text finds one of an image's c captions among T texts with 1 - C(T - c, k) / C(T, k), averaged."""
    texts = len(text_to_image)
    captions = np.bincount(text_to_image, minlength=images)
    chance = {}
    for k in ks:
        k_texts, k_images = min(k, texts), min(k, images)
        miss = np.ones(images)  # C(T - c, k) / C(T, k) as a product, exactly
        for j in range(k_texts):
            miss *= np.clip(texts - captions - j, 0, None) / (texts - j)
        chance[f"image_to_text_R@{k}"] = float(1 - miss.mean())
        chance[f"text_to_image_R@{k}"] = k_images / images
    return chance


def evaluate(model: nn.Module, zeroshot: Any = None, retrieval: Any = None, *, context_length: int = 77,
             device: str | torch.device = "cpu", bf16: bool = False, batch_size: int = 256, workers: int = 0,
             tokenizer: Callable | None = None, level: float = 0.95) -> Evaluation:
    """Every metric of one evaluation with its interval at `level`; the model is left in the mode it was in.

    `zeroshot` is a `nas.data.ZeroShotSet` (`dataset` of (image, label), `classnames`, `templates`) and
    `retrieval` a `nas.data.RetrievalSet` (`images`, `texts`, `text_to_image`); `workers` decode images.
    The tokenizer defaults to open_clip's CLIP BPE at `context_length`, as training uses.
    """
    from nas.data import tokenizer as make_tokenizer

    device = torch.device(device)
    tokenizer = tokenizer or make_tokenizer(context_length=context_length)
    was_training = model.training
    model.eval()
    evaluation = Evaluation({}, {}, {}, {})
    try:
        if zeroshot is not None:
            evaluation |= zeroshot_metrics(model, zeroshot.dataset, zeroshot.classnames, zeroshot.templates,
                                           tokenizer, device, bf16, batch_size, workers, level)
        if retrieval is not None:
            evaluation |= retrieval_metrics(model, retrieval.images, retrieval.texts, retrieval.text_to_image,
                                            tokenizer, device, bf16, batch_size, workers, level)
    finally:
        model.train(was_training)
    return evaluation
