"""Evaluation sets: zero-shot classification from class folders, retrieval from image-caption shards.

    zs = zeroshot_set("imagenet/val", image_size=224)    # zs.dataset yields (image, label)
    classifier = open_clip.build_zero_shot_classifier(model, tokenizer, zs.classnames, zs.templates)
    rs = retrieval_set("data/eval/retrieval", image_size=224)
    # rs.images yields images; rs.texts[i] describes image rs.text_to_image[i]

Class folders are labelled in sorted order (torchvision's `ImageFolder`). Names and prompt templates come
from `classnames.txt` and `templates.txt` beside the folders (one per line, a template holds `{}`), as
the synthetic set writes them; ImageNet-style synset folders (`n01440764`, ...) get open_clip's ImageNet
class names and the OpenAI templates; otherwise folder names (underscores as spaces) and
"a photo of a {}.".
"""

from __future__ import annotations

import itertools
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from nas.data.prompts import DEFAULT_TEMPLATES, check_templates
from nas.data.samples import decode_image, decoded, read_shard
from nas.data.shards import expand_shards
from nas.data.transforms import image_transform
from nas.errors import ConfigError

SYNSET = re.compile(r"n\d{8}")


@dataclass
class ZeroShotSet:
    """A labelled image set with a class name per label and the prompt templates to embed them with."""

    dataset: Dataset
    classnames: list[str]
    templates: list[str]


@dataclass
class RetrievalSet:
    """Images and captions; several captions may describe one image (`text_to_image`)."""

    images: Dataset
    texts: list[str]
    text_to_image: list[int]
    skipped: Counter = field(default_factory=Counter)

    @property
    def image_to_texts(self) -> list[list[int]]:
        result: list[list[int]] = [[] for _ in range(len(self.images))]
        for text, image in enumerate(self.text_to_image):
            result[image].append(text)
        return result


def zeroshot_set(path: str | os.PathLike, image_size: int = 224, transform: Callable | None = None,
                 templates: Sequence[str] | None = None) -> ZeroShotSet:
    """The class-folder directory at `path`, preprocessed as open_clip evaluates (resize, center crop).
    `templates` replace the set's own prompt templates (`templates.txt`), e.g. ["{}"] when the training captions
    are the bare class names."""
    from torchvision.datasets import ImageFolder

    root = Path(path)
    if not root.is_dir():
        raise ConfigError("zero-shot set not found (expected a directory of class folders)", source=str(root))
    folders = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not folders:
        raise ConfigError("holds no class folders", source=str(root))
    imagenet = all(SYNSET.fullmatch(name) for name in folders)
    classnames = _imagenet_classnames(root, folders) if imagenet else _classnames(root, folders)
    if templates is not None:
        templates = check_templates(templates)
    else:
        templates = _imagenet_templates() if imagenet else _templates(root)
    try:
        dataset = ImageFolder(str(root), transform=transform or image_transform(image_size, train=False),
                              loader=_load_rgb)
    except FileNotFoundError as err:
        raise ConfigError(str(err), source=str(root)) from err
    return ZeroShotSet(dataset, classnames, templates)


def class_count(path: str | os.PathLike) -> int | None:
    """How many classes a class-folder set has (chance top-1 is one over it); None when it cannot be read."""
    root = Path(path)
    if not root.is_dir():
        return None
    return sum(1 for entry in os.scandir(root) if entry.is_dir()) or None


def _load_rgb(path: str) -> Image.Image:
    try:
        with open(path, "rb") as f:
            return decode_image(f.read())
    except (OSError, ValueError, SyntaxError) as err:
        raise ConfigError(f"image does not decode: {err}", source=path) from err


def _classnames(root: Path, folders: list[str]) -> list[str]:
    names = _lines(root / "classnames.txt")
    if names is None:
        return [name.replace("_", " ") for name in folders]
    if len(names) != len(folders):
        raise ConfigError(f"has {len(names)} names for {len(folders)} class folders",
                          source=str(root / "classnames.txt"))
    return names


def _templates(root: Path) -> list[str]:
    templates = _lines(root / "templates.txt")
    if templates is None:
        return list(DEFAULT_TEMPLATES)
    for number, template in enumerate(templates, start=1):
        if template.count("{}") != 1:
            raise ConfigError(f"line {number} ({template!r}) must hold '{{}}' exactly once",
                              source=str(root / "templates.txt"))
    return templates


def _lines(path: Path) -> list[str] | None:
    if not path.exists():
        return None
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ConfigError("is empty", source=str(path))
    return lines


def _imagenet_classnames(root: Path, folders: list[str]) -> list[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    from timm.data import ImageNetInfo

    index = {synset: i for i, synset in enumerate(ImageNetInfo().label_names())}
    unknown = [name for name in folders if name not in index]
    if unknown:
        raise ConfigError(f"folders {unknown[:5]} are not ImageNet-1k synsets", source=str(root))
    return [IMAGENET_CLASSNAMES[index[name]] for name in folders]


def _imagenet_templates() -> list[str]:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]


class EncodedImages(Dataset):
    """Images kept encoded in memory and decoded per item, so that a DataLoader can decode in parallel."""

    def __init__(self, images: Sequence[bytes], transform: Callable):
        self.images = list(images)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(decode_image(self.images[index]))


def retrieval_set(source: str | Sequence[str], image_size: int = 224, transform: Callable | None = None,
                  max_images: int | None = None) -> RetrievalSet:
    """Image-caption pairs from shards (all captions in a sample's json `captions` list, else its .txt).

    Broken samples are skipped and counted in `skipped`, as in training; an empty set is an error.
    """
    images: list[bytes] = []
    texts: list[str] = []
    text_to_image: list[int] = []
    skipped: Counter = Counter()
    pairs = (pair for url in expand_shards(source) for pair in decoded(read_shard(url, skipped), skipped))
    for sample, _ in itertools.islice(pairs, max_images):
        for text in _captions(sample.meta) or [sample.caption]:
            texts.append(text)
            text_to_image.append(len(images))
        images.append(sample.image)
    if not images:
        raise ConfigError(f"no readable image-caption pair; skipped: {dict(skipped)}", source=str(source))
    transform = transform or image_transform(image_size, train=False)
    return RetrievalSet(EncodedImages(images, transform), texts, text_to_image, skipped)



def _captions(meta: dict) -> list[str]:
    captions = meta.get("captions")
    if not isinstance(captions, list):
        return []
    return [c.strip() for c in captions if isinstance(c, str) and c.strip()]
