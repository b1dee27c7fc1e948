"""Evaluation: metric functions on constructed embeddings, and the model-level path on an oracle model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from nas.data import RetrievalSet, ZeroShotSet
from nas.evaluate import Evaluation, evaluate, retrieval_hits, retrieval_recall, topk_accuracy, topk_hits
from nas.uncertainty import bootstrap_recall_interval, unpack_hits, wilson_interval


def test_topk_accuracy_counts_the_label_among_the_k_highest():
    logits = torch.tensor([[0.9, 0.5, 0.1, 0.0, 0.2, 0.3],    # label 0: rank 1
                           [0.1, 0.2, 0.9, 0.8, 0.7, 0.6],    # label 4: rank 3
                           [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]])   # label 5: rank 6
    accuracy = topk_accuracy(logits, torch.tensor([0, 4, 5]), ks=(1, 3, 5))
    assert accuracy == {1: pytest.approx(1 / 3), 3: pytest.approx(2 / 3), 5: pytest.approx(2 / 3)}


def test_topk_accuracy_caps_k_at_the_number_of_classes():
    logits = torch.tensor([[0.1, 0.9, 0.5], [0.9, 0.1, 0.5]])
    assert topk_accuracy(logits, torch.tensor([0, 1]), ks=(1, 5)) == {1: 0.0, 5: 1.0}


def _brute_force_recall(image_features, text_features, text_to_image, k):
    similarity = (image_features @ text_features.T).tolist()
    images, texts = len(similarity), len(similarity[0])
    i2t = 0
    for i in range(images):
        ranked = sorted(range(texts), key=lambda t: -similarity[i][t])[:k]
        i2t += any(text_to_image[t] == i for t in ranked)
    t2i = 0
    for t in range(texts):
        ranked = sorted(range(images), key=lambda i: -similarity[i][t])[:k]
        t2i += text_to_image[t] in ranked
    return i2t / images, t2i / texts


def test_retrieval_recall_on_constructed_embeddings():
    # Three images, two captions each except image 2 (one). Caption embeddings sit near their image,
    # except caption 4, which sits on image 0: text-to-image misses it at R@1 but finds it by R@2.
    images = F.normalize(torch.eye(3, 4), dim=1)
    texts = F.normalize(torch.tensor([[1.0, 0.1, 0, 0], [1.0, 0, 0.1, 0],     # image 0
                                      [0.1, 1.0, 0, 0], [0, 1.0, 0, 0.1],     # image 1
                                      [1.0, 0, 0.5, 0]]), dim=1)              # image 2, but looks like 0
    text_to_image = torch.tensor([0, 0, 1, 1, 2])
    recall = retrieval_recall(images, texts, text_to_image, ks=(1, 2, 5))
    assert recall["text_to_image_R@1"] == pytest.approx(4 / 5)
    assert recall["text_to_image_R@2"] == pytest.approx(1.0)
    # Image 2's best caption is its own (0.45 vs 0), images 0 and 1 find theirs: all hit at 1.
    assert recall["image_to_text_R@1"] == pytest.approx(1.0)
    assert recall["image_to_text_R@5"] == pytest.approx(1.0)


def test_per_item_hits_are_what_the_accuracies_average():
    logits = torch.tensor([[0.9, 0.5, 0.1], [0.1, 0.2, 0.9], [0.6, 0.5, 0.4]])
    hits = topk_hits(logits, torch.tensor([0, 1, 1]), ks=(1, 2))
    assert hits[1].tolist() == [True, False, False] and hits[2].tolist() == [True, True, True]
    images = F.normalize(torch.eye(3, 4), dim=1)
    texts = F.normalize(torch.tensor([[1.0, 0.1, 0, 0], [0.1, 1.0, 0, 0], [1.0, 0, 0.5, 0]]), dim=1)
    per_item = retrieval_hits(images, texts, torch.tensor([0, 1, 2]), ks=(1,))
    assert per_item["text_to_image_R@1"].tolist() == [True, True, False]  # caption 2 looks like image 0
    assert per_item["image_to_text_R@1"].tolist() == [True, True, True]


def test_evaluation_from_hits_uses_wilson_per_item_and_the_image_bootstrap_for_captions():
    captions = [True, False, True, True, False, True]
    images = [0, 0, 1, 1, 2, 2]
    evaluation = Evaluation.from_hits({"zeroshot_top1": [True, False, True, True], "text_to_image_R@1": captions},
                                      {"text_to_image_R@1": images})
    assert evaluation.metrics == {"zeroshot_top1": 0.75, "text_to_image_R@1": pytest.approx(4 / 6)}
    assert evaluation.n == {"zeroshot_top1": 4, "text_to_image_R@1": 6}
    assert evaluation.intervals["zeroshot_top1"] == pytest.approx((0.3006, 0.9544), abs=5e-5)  # Wilson 3/4
    assert evaluation.intervals["text_to_image_R@1"] == bootstrap_recall_interval(captions, images)
    assert evaluation.intervals["text_to_image_R@1"] != wilson_interval(4, 6)
    assert evaluation.flat() == {
        "zeroshot_top1": 0.75, "zeroshot_top1_n": 4, "zeroshot_top1_low": evaluation.intervals["zeroshot_top1"][0],
        "zeroshot_top1_high": evaluation.intervals["zeroshot_top1"][1],
        "text_to_image_R@1": pytest.approx(4 / 6), "text_to_image_R@1_n": 6,
        "text_to_image_R@1_low": evaluation.intervals["text_to_image_R@1"][0],
        "text_to_image_R@1_high": evaluation.intervals["text_to_image_R@1"][1]}
    packed = evaluation.packed_hits()
    assert unpack_hits(packed["text_to_image_R@1"], 6).tolist() == captions
    with pytest.raises(ValueError, match="same metrics"):
        Evaluation({"zeroshot_top1": 0.5}, {}, {}, {})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_recall_matches_a_brute_force_count(seed):
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(20, 8, generator=generator), dim=1)
    text_to_image = torch.randint(0, 20, (45,), generator=generator)
    texts = F.normalize(images[text_to_image] + 0.9 * torch.randn(45, 8, generator=generator), dim=1)
    recall = retrieval_recall(images, texts, text_to_image, ks=(1, 5, 10))
    for k in (1, 5, 10):
        i2t, t2i = _brute_force_recall(images, texts, text_to_image.tolist(), k)
        assert recall[f"image_to_text_R@{k}"] == pytest.approx(i2t)
        assert recall[f"text_to_image_R@{k}"] == pytest.approx(t2i)


CLASSNAMES = ["red circle", "blue square", "green star", "pink heart", "brown ring", "purple cross", "orange moon"]


class OracleCLIP(nn.Module):
    """A stand-in CLIP whose embeddings are known: an image of class c (pixel [0, 0, 0] = c) embeds on e_c,
    a text mentioning class c on e_c. `confuse` makes class c's images look most like another class and
    second most like c."""

    def __init__(self, confuse: dict[int, int] | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # so that .eval()/.train() and devices behave
        self.confuse = confuse or {}
        self.text_batches = 0

    def encode_image(self, images, normalize=False):
        labels = images[:, 0, 0, 0].round().long()
        looks_like = torch.tensor([self.confuse.get(int(c), int(c)) for c in labels])
        embedding = F.one_hot(looks_like, 8).float() + 0.5 * (looks_like != labels).float()[:, None] * F.one_hot(
            labels, 8).float()
        return F.normalize(embedding, dim=1)

    def encode_text(self, tokens, normalize=False):
        self.text_batches += 1
        return F.normalize(F.one_hot(tokens[:, 0], 8).float(), dim=1)


def oracle_tokenizer(texts):
    """Token 0 of each text: the index of the class name it contains (templates wrap the name)."""
    return torch.tensor([[next(i for i, name in enumerate(CLASSNAMES) if name in text), 0] for text in texts])


def _images(labels):
    images = torch.zeros(len(labels), 3, 4, 4)
    images[:, 0, 0, 0] = torch.tensor(labels, dtype=torch.float)
    return images


def test_zero_shot_top1_top5_on_an_oracle_model():
    labels = [0, 1, 2, 3, 4, 5, 6, 0, 1, 2]
    dataset = TensorDataset(_images(labels), torch.tensor(labels))
    zeroshot = ZeroShotSet(dataset, CLASSNAMES, ["a photo of a {}.", "a {} on white."])
    model = OracleCLIP(confuse={1: 2})  # class-1 images look like class 2: 2 of 10 wrong at top-1, right at 2
    evaluation = evaluate(model, zeroshot=zeroshot, tokenizer=oracle_tokenizer, batch_size=4)
    assert evaluation.metrics["zeroshot_top1"] == pytest.approx(0.8)
    assert evaluation.metrics["zeroshot_top5"] == pytest.approx(1.0)
    assert evaluation.hits["zeroshot_top1"].tolist() == [label != 1 for label in labels]
    assert evaluation.n == {"zeroshot_top1": 10, "zeroshot_top5": 10}
    # Wilson 95 %: 8/10 -> [0.4902, 0.9433] (centre 0.7167, half-width 0.2266); 10/10 -> [10/(10 + z^2), 1].
    assert evaluation.intervals["zeroshot_top1"] == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert evaluation.intervals["zeroshot_top5"] == pytest.approx((10 / (10 + 1.959964**2), 1.0))
    # The classifier is built once per evaluation: 7 classes x 2 templates in batches of 10 classes.
    assert model.text_batches == math.ceil(len(CLASSNAMES) / 10)


def test_evaluate_runs_retrieval_and_restores_the_training_mode():
    labels = [0, 1, 2, 3]
    retrieval = RetrievalSet(TensorDataset(_images(labels)), ["the red circle", "a red circle", "blue square",
                                                               "green star", "pink heart"], [0, 0, 1, 2, 3])
    model = OracleCLIP().train()
    evaluation = evaluate(model, retrieval=retrieval, tokenizer=oracle_tokenizer)
    metrics = evaluation.metrics
    assert model.training
    assert {k: metrics[k] for k in ("image_to_text_R@1", "text_to_image_R@1", "text_to_image_R@10")} == {
        "image_to_text_R@1": 1.0, "text_to_image_R@1": 1.0, "text_to_image_R@10": 1.0}
    # Image-to-text rests on the 4 images, text-to-image on 5 captions of 4 images: every caption hits, so
    # the bootstrap has nothing to resample and the interval is Wilson's over the 4 images.
    assert evaluation.n["image_to_text_R@1"] == 4 and evaluation.n["text_to_image_R@1"] == 5
    assert evaluation.intervals["image_to_text_R@1"] == wilson_interval(4, 4)
    assert evaluation.intervals["text_to_image_R@1"] == pytest.approx((4 / (4 + 1.959964**2), 1.0))
    assert all(isinstance(v, (int, float)) for v in evaluation.flat().values())


def test_zero_shot_set_from_class_folders_through_a_real_model(tmp_path):
    """The real path: a nas.data zero-shot set on disk, open_clip's tokenizer, a built CLIP model."""
    from PIL import Image

    from nas.arch import Arch, Stage, Transformer
    from nas.data import zeroshot_set
    from nas.models import build_clip
    from nas.presets import TextTower

    for name in ("blue_square", "red_circle"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("RGB", (32, 32), (40 * i, 0, 200)).save(tmp_path / name / f"{i}.png")
    arch = Arch(stem="conv", stem_width=8, stages=(Stage("mbconv", 1, 16),),
                transformer=Transformer(width=32, depth=1, heads=2), image_size=32, embed_dim=16)
    model = build_clip(arch, TextTower(width=32, layers=1, heads=2, context_length=16))
    metrics = evaluate(model, zeroshot=zeroshot_set(tmp_path, 32), context_length=16).metrics
    assert set(metrics) == {"zeroshot_top1", "zeroshot_top5"}
    assert metrics["zeroshot_top5"] == 1.0  # two classes
    assert metrics["zeroshot_top1"] in (0.0, 0.5, 1.0)
