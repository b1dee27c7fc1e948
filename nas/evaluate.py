"""Zero-shot classification and image-text retrieval of a CLIP model, as open_clip and CLIP_benchmark do them.

Zero-shot: the class-name embeddings are averaged over prompt templates (open_clip's
`build_zero_shot_classifier`, computed once per evaluation), images are classified by cosine similarity,
and top-1/top-5 accuracy is reported. Retrieval: recall@k in both directions over held-out pairs, where
an image may have several captions; image-to-text counts a hit when any of the image's captions is in the
top k, text-to-image when the caption's image is.

Everything runs batched, under `torch.no_grad()` and (on GPU) bf16 autocast, with the model in eval mode.
The metric functions (`topk_accuracy`, `retrieval_recall`) take embeddings, so they can be checked on
constructed ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from open_clip import build_zero_shot_classifier
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nas.metrics import RETRIEVAL_KS, ZEROSHOT_KS


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = ZEROSHOT_KS) -> dict[int, float]:
    """Fraction of rows whose label is among the k highest logits, for each k (k capped at the classes)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels.view(-1, 1)
    return {k: hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def retrieval_recall(image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: torch.Tensor,
                     ks: Sequence[int] = RETRIEVAL_KS) -> dict[str, float]:
    """Recall@k both ways; `text_to_image[t]` is the index of caption t's image (images may have several)."""
    similarity = image_features @ text_features.T  # (images, texts)
    text_to_image = text_to_image.to(similarity.device)
    k_max = max(ks)
    metrics = {}
    top_texts = similarity.topk(min(k_max, similarity.shape[1]), dim=1).indices  # (images, k)
    owner = text_to_image[top_texts] == torch.arange(len(similarity), device=similarity.device).view(-1, 1)
    for k in ks:
        metrics[f"image_to_text_R@{k}"] = owner[:, :k].any(dim=1).float().mean().item()
    top_images = similarity.T.topk(min(k_max, similarity.shape[0]), dim=1).indices  # (texts, k)
    found = top_images == text_to_image.view(-1, 1)
    for k in ks:
        metrics[f"text_to_image_R@{k}"] = found[:, :k].any(dim=1).float().mean().item()
    return metrics


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
                     workers: int = 0) -> dict[str, float]:
    """Top-1 and top-5 zero-shot accuracy; `images` yields (images, labels) batches or is such a dataset."""
    classifier = zero_shot_classifier(model, classnames, templates, tokenizer, device, bf16)
    features, labels = encode_images(model, images, device, bf16, batch_size, workers)
    if labels is None:
        raise ValueError("zero-shot images must come with labels: (images, labels) pairs")
    accuracy = topk_accuracy(features @ classifier, labels.to(features.device), ZEROSHOT_KS)
    return {f"zeroshot_top{k}": value for k, value in accuracy.items()}


def retrieval_metrics(model: nn.Module, images: Any, texts: Sequence[str], text_to_image: Sequence[int],
                      tokenizer: Callable, device: torch.device, bf16: bool = False, batch_size: int = 256,
                      workers: int = 0) -> dict[str, float]:
    """Recall@1/5/10 both ways over held-out pairs (`text_to_image[t]`: index of caption t's image)."""
    image_features, _ = encode_images(model, images, device, bf16, batch_size, workers)
    text_features = encode_texts(model, texts, tokenizer, device, bf16, batch_size)
    return retrieval_recall(image_features, text_features, torch.as_tensor(list(text_to_image)), RETRIEVAL_KS)


def evaluate(model: nn.Module, zeroshot: Any = None, retrieval: Any = None, *, context_length: int = 77,
             device: str | torch.device = "cpu", bf16: bool = False, batch_size: int = 256, workers: int = 0,
             tokenizer: Callable | None = None) -> dict[str, float]:
    """All metrics of one evaluation, as one flat dict; the model is left in the mode it was in.

    `zeroshot` is a `nas.data.ZeroShotSet` (`dataset` of (image, label), `classnames`, `templates`) and
    `retrieval` a `nas.data.RetrievalSet` (`images`, `texts`, `text_to_image`); `workers` decode images.
    The tokenizer defaults to open_clip's CLIP BPE at `context_length`, as training uses.
    """
    from nas.data import tokenizer as make_tokenizer

    device = torch.device(device)
    tokenizer = tokenizer or make_tokenizer(context_length=context_length)
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    try:
        if zeroshot is not None:
            metrics.update(zeroshot_metrics(model, zeroshot.dataset, zeroshot.classnames, zeroshot.templates,
                                            tokenizer, device, bf16, batch_size, workers))
        if retrieval is not None:
            metrics.update(retrieval_metrics(model, retrieval.images, retrieval.texts, retrieval.text_to_image,
                                             tokenizer, device, bf16, batch_size, workers))
    finally:
        model.train(was_training)
    return metrics
