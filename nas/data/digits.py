"""Real images for the tests and for a first try: scikit-learn's 1,797 handwritten digits as a captioned
DataComp-format dataset with a held-out zero-shot set.

The digits (`sklearn.datasets.load_digits`: the UCI optical-recognition test set, 8x8 pixels, 17 grey
levels, written by 13 people) ship inside the scikit-learn wheel, so nothing is downloaded; scikit-learn
is the `digits` extra. They are the one dataset here that no one on the project drew: a model that learns
them learns from real handwriting.

Output, under `out/`:

    shards/00000000.tar ...      <uid>.png, <uid>.txt, <uid>.json per training digit (DataComp's layout)
    shards/sizes.json            samples per shard
    metadata/00000000.parquet    uid, label, classname, caption, sklearn_index: one row per training digit
    eval/zeroshot/<d>_<name>/*.png, classnames.txt, templates.txt     the held-out digits, one folder per class
    digits.json                  the settings and what was written

Each training digit is captioned from one of several templates ("a handwritten digit seven", "a photo of
the number 7", ...), chosen by the seed; the zero-shot prompts use the class names (the words) in templates
of their own. Images are dark ink on white, resized from 8x8 with bicubic interpolation to `size`. Which
digits are held out (a stratified `held_out` fraction of each class), the order of the training shards
and the captions are functions of the seed: the same seed writes the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from nas.data.writers import write_parquet, write_shard, write_sizes, write_zeroshot_prompts
from nas.errors import ConfigError, require_int

CLASSNAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_TEMPLATES = (
    "a handwritten digit {name}", "a photo of the number {digit}", "the number {name}, written by hand",
    "a scan of a handwritten {digit}", "handwritten {name}", "an image of the digit {digit}",
    "a small grayscale picture of a handwritten {name}", "the digit {digit}",
)
ZEROSHOT_TEMPLATES = ("a handwritten digit {}.", "a photo of the number {}.", "the digit {}.",
                      "a scan of a handwritten {}.")
RECORD = "digits.json"


def write_digits(out: str | os.PathLike, *, size: int = 32, seed: int = 0, held_out: float = 0.3,
                 samples_per_shard: int = 500) -> dict:
    """Write the training shards and the held-out zero-shot set under `out`; returns what `digits.json` records.

    A directory already holding this set with the same settings is left as it is; one holding anything
    else is refused.
    """
    settings = {"size": size, "seed": seed, "held_out": held_out, "samples_per_shard": samples_per_shard}
    _validate(settings)
    root = Path(out)
    record = _claim(root, settings)
    if record is not None:
        return record
    images, labels = _load()
    train, zeroshot = split(labels, held_out, seed)
    rng = np.random.default_rng([seed, 1])
    captions = [caption(int(labels[i]), rng) for i in train]
    for sub in ("shards", "metadata", "eval/zeroshot"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / RECORD).write_text(json.dumps({"settings": settings, "complete": False}, indent=2) + "\n")
    sizes = {}
    for shard, first in enumerate(range(0, len(train), samples_per_shard)):
        indices, texts = train[first:first + samples_per_shard], captions[first:first + samples_per_shard]
        write_parquet(root / "metadata" / f"{shard:08d}.parquet", {
            "uid": [uid_for(seed, i) for i in indices], "label": [int(labels[i]) for i in indices],
            "classname": [CLASSNAMES[labels[i]] for i in indices], "caption": texts, "sklearn_index": indices})
        sizes[f"{shard:08d}.tar"] = write_shard(
            root / "shards" / f"{shard:08d}.tar",
            (_sample(seed, i, int(labels[i]), text, images[i], size) for i, text in zip(indices, texts)))
    write_sizes(root / "shards", sizes)
    directory = root / "eval" / "zeroshot"
    for i in zeroshot:
        folder = directory / f"{labels[i]}_{CLASSNAMES[labels[i]]}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:04d}.png").write_bytes(encode_png(render(images[i], size)))
    write_zeroshot_prompts(directory, CLASSNAMES, ZEROSHOT_TEMPLATES)
    record = {"settings": settings, "complete": True, "train_samples": len(train), "train_shards": len(sizes),
              "zeroshot_classes": len(CLASSNAMES), "zeroshot_images": len(zeroshot),
              "source": "sklearn.datasets.load_digits"}
    (root / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _validate(settings: dict) -> None:
    for name, low in (("size", 8), ("seed", 0), ("samples_per_shard", 1)):
        require_int(settings[name], name, low)
    if not 0 < settings["held_out"] < 1:
        raise ConfigError(f"must be a fraction in (0, 1), got {settings['held_out']!r}", field="held_out")


def _claim(root: Path, settings: dict) -> dict | None:
    """The record of this very set when `root` holds it complete; None when `root` is new, empty, or holds
    an interrupted write of it (which is written again: the same bytes)."""
    if (root / RECORD).exists():
        record = json.loads((root / RECORD).read_text())
        if record.get("settings") != settings:
            raise ConfigError(f"holds the digits with other settings ({record.get('settings')}); choose another --out",
                              source=str(root / RECORD))
        return record if record.get("complete") else None
    if root.exists() and any(root.iterdir()):
        raise ConfigError("exists and is not empty; choose a new directory for the digits", source=str(root))
    return None


def _load() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits (8x8, values 0-16) and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ConfigError("needs scikit-learn, which is not installed: pip install 'vitamin-nas[digits]'") from err
    digits = load_digits()
    return digits.images, digits.target


def split(labels: np.ndarray, held_out: float, seed: int) -> tuple[list[int], list[int]]:
    """(training indices in shard order, held-out indices in class order): `held_out` of every class held out."""
    rng = np.random.default_rng([seed, 0])
    train, zeroshot = [], []
    for label in range(len(CLASSNAMES)):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = math.ceil(held_out * len(members))
        zeroshot.extend(sorted(members[:cut].tolist()))
        train.extend(members[cut:].tolist())
    return rng.permutation(train).tolist(), zeroshot


def caption(label: int, rng: np.random.Generator) -> str:
    template = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
    return template.format(name=CLASSNAMES[label], digit=label)


def uid_for(seed: int, index: int) -> str:
    """A DataComp-style 32-hex-digit uid per (seed, digit)."""
    return hashlib.md5(f"vitamin-nas-digits:{seed}:{index}".encode()).hexdigest()


def render(digit: np.ndarray, size: int) -> Image.Image:
    """Dark ink on white, as a scanned page looks, resized from 8x8 to `size` (bicubic)."""
    pixels = np.rint(255 - digit * (255 / 16)).astype(np.uint8)
    return Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC)


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _sample(seed: int, index: int, label: int, text: str, digit: np.ndarray, size: int) -> dict:
    uid = uid_for(seed, index)
    meta = {"uid": uid, "key": uid, "url": f"sklearn://load_digits/{index}", "caption": text, "label": label,
            "width": size, "height": size, "original_width": 8, "original_height": 8}
    return {"__key__": uid, "png": encode_png(render(digit, size)), "txt": text.encode(),
            "json": json.dumps(meta, sort_keys=True).encode()}
