"""A synthetic captioned dataset in DataComp's format: the embedded default's data.

Each image is a procedurally drawn scene: one kind of object (10 shapes, 8 colours, 3 sizes, 5 textures)
once or several times, sometimes a second kind, on a plain, gradient or noisy background, and a caption
that describes it in one of many phrasings (shape and colour always; count, size, texture, position,
background and the second object when the phrasing includes them). A fraction of captions are web-style
noise (an unrelated caption, or alt-text such as "IMG_0423.jpg"), so that filtering on the metadata's
scores is a real choice. Passing the zero-shot test (which colour, which shape, 80 classes) takes
learning colour and shape from pixels; colour alone gives 1 in 8.

Output, under `out/`:

    shards/00000000.tar ...      <uid>.jpg, <uid>.txt, <uid>.json per sample (DataComp's layout)
    shards/sizes.json            samples per shard
    metadata/00000000.parquet    one row per sample: uid, text, sizes, the two score columns, and the
                                 ground truth (shape, color, count, size, position, texture, background)
    eval/zeroshot/<color>_<shape>/*.jpg, classnames.txt, templates.txt     held-out, one object each
    eval/retrieval/00000000.tar  held-out pairs; each .json holds five captions of the image
    synth.json                   the generator's settings and what was written

`clip_b32_similarity_score` and `clip_l14_similarity_score` are stand-ins with DataComp's names, drawn
high for matching captions and low for noise, so that DataComp-style filters (`clip_l14_similarity_score
>= 0.3`) run unchanged; they are not CLIP scores. Everything is a function of the seed: the same seed
writes byte-identical shards, whatever the number of processes. A rerun into the same directory with the
same settings keeps the shards already written.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from nas.data.writers import write_parquet, write_shard, write_sizes, write_zeroshot_prompts
from nas.errors import ConfigError

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "ring", "crescent", "heart")
PLURALS = {"cross": "crosses"}
COLORS = {
    "red": (214, 40, 40), "orange": (245, 132, 24), "yellow": (242, 212, 30), "green": (38, 158, 64),
    "blue": (36, 84, 214), "purple": (128, 56, 184), "pink": (240, 122, 186), "brown": (122, 78, 38),
}
BACKGROUNDS = {"white": (244, 244, 244), "black": (20, 20, 20), "gray": (128, 128, 128), "beige": (222, 208, 176)}
BACKGROUND_STYLES = ("plain", "gradient", "noisy")
SIZES = {"small": (0.16, 0.24), "medium": (0.28, 0.38), "large": (0.44, 0.58)}
TEXTURES = ("solid", "striped", "dotted", "checkered", "outlined")
TEXTURE_WORDS = {"striped": ("striped",), "dotted": ("dotted", "polka-dot"), "checkered": ("checkered", "checked"),
                 "outlined": ("outlined", "hollow")}
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
POSITION_PHRASES = {
    "top left": ("in the top left corner", "at the top left"), "top": ("at the top", "near the top"),
    "top right": ("in the top right corner", "at the top right"), "left": ("on the left", "on the left side"),
    "center": ("in the center", "in the middle"), "right": ("on the right", "on the right side"),
    "bottom left": ("in the bottom left corner", "at the bottom left"),
    "bottom": ("at the bottom", "near the bottom"),
    "bottom right": ("in the bottom right corner", "at the bottom right"),
}
COUNT_WORDS = {2: "two", 3: "three", 4: "four"}
CAPTION_TEMPLATES = (
    "{np}{pos}{sec}{bg}", "a photo of {np}{pos}{sec}{bg}", "an image of {np}{sec}{pos}{bg}",
    "there {be} {np}{pos}{bg}{sec}", "a drawing of {np}{sec}{bg}{pos}", "{np}{bg}{pos}{sec}",
    "picture showing {np}{pos}{sec}{bg}", "a simple illustration of {np}{pos}{bg}{sec}", "{NP}{pos}{sec}{bg}.",
    "this is {np}{pos}{sec}{bg}", "close-up of {np}{pos}{bg}{sec}", "{np}{sec}, {bgbare}",
)
NOISE_CAPTIONS = ("image", "untitled", "photo", "stock image", "thumbnail", "click to enlarge", "download",
                  "IMG_{n:04d}.jpg", "DSC{n:05d}", "picture {n}", "file_{n}.png", "screenshot {n}")
ZEROSHOT_TEMPLATES = (
    "a photo of the {}.", "a drawing of the {}.", "the {}.", "an image showing one {}.", "a picture with one {}.",
    "{} on a plain background.", "one {}.", "a simple illustration of the {}.", "a close-up of the {}.",
    "there is one {} in the picture.",
)
RETRIEVAL_CAPTIONS = 5
SUPERSAMPLE = 2
#: `varied`: the scenes above (counts, sizes, textures, second objects, gradient and noisy backgrounds);
#: `simple`: one solid, medium or large object on a plain background, in training and evaluation alike, so
#: that a CPU-sized tower learns colour and shape in the minutes of the quickstart.
SCENES = ("varied", "simple")


@dataclass(frozen=True)
class SynthConfig:
    """What `vitamin-nas data synth` writes. `workers` changes only the speed, never the bytes."""

    samples: int = 20_000
    size: int = 64
    seed: int = 0
    samples_per_shard: int = 1000
    zeroshot_per_class: int = 10
    retrieval_samples: int = 1000
    caption_noise: float = 0.1
    jpeg_quality: int = 90
    scenes: str = "varied"
    workers: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        for name, low in (("samples", 1), ("size", 16), ("samples_per_shard", 1), ("zeroshot_per_class", 0),
                          ("retrieval_samples", 0), ("workers", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"must be an integer >= {low}, got {value!r}", field=name)
        if not 0 <= self.caption_noise < 1:
            raise ConfigError(f"must be in [0, 1), got {self.caption_noise}", field="caption_noise")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"must be in [1, 100], got {self.jpeg_quality}", field="jpeg_quality")
        if self.scenes not in SCENES:
            raise ConfigError(f"{self.scenes!r} is not one of {', '.join(SCENES)}", field="scenes")

    def settings(self) -> dict:
        """What determines the bytes written (everything but `workers`)."""
        values = asdict(self)
        values.pop("workers")
        return values


@dataclass(frozen=True)
class Thing:
    """One kind of object in a scene, drawn `count` times."""

    shape: str
    color: str
    size: str
    texture: str
    count: int = 1


@dataclass(frozen=True)
class Scene:
    main: Thing
    position: str | None
    background: str
    background_style: str
    second: Thing | None = None

    def labels(self) -> dict:
        second = self.second
        return {"shape": self.main.shape, "color": self.main.color, "count": self.main.count,
                "size": self.main.size, "texture": self.main.texture, "position": self.position,
                "background": self.background, "background_style": self.background_style,
                "second_shape": second.shape if second else None, "second_color": second.color if second else None}


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, int.from_bytes(split.encode(), "little"), index])


def uid_for(seed: int, split: str, index: int) -> str:
    """A DataComp-style 32-hex-digit uid, unique per (seed, split, index)."""
    return hashlib.md5(f"vitamin-nas-synth:{seed}:{split}:{index}".encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- scenes


def random_scene(rng: np.random.Generator, shape: str | None = None, color: str | None = None,
                 alone: bool = False, simple: bool = False) -> Scene:
    """A scene; `shape`/`color` fix the main object, `alone` makes it a single object (eval sets). A `simple`
    scene is one solid, medium or large object on a plain background (`SynthConfig.scenes`)."""
    if simple:
        size = ("medium", "large")[int(rng.integers(2))]
        main = Thing(shape or SHAPES[int(rng.integers(len(SHAPES)))], color or _pick(rng, COLORS), size, "solid")
        return Scene(main, POSITIONS[int(rng.integers(len(POSITIONS)))], _pick(rng, BACKGROUNDS), "plain")
    count = 1 if alone else _weighted(rng, (1, 2, 3, 4), (0.55, 0.75, 0.9, 1.0))
    size = ("small", "medium", "large")[int(rng.integers(3))] if count == 1 else (
        "small" if count > 2 else ("small", "medium")[int(rng.integers(2))])
    shape = shape or SHAPES[int(rng.integers(len(SHAPES)))]
    main = Thing(shape, color or _pick(rng, COLORS), size, _texture(rng, shape, size), count)
    second = None
    if count == 1 and not alone and rng.random() < 0.25:
        other = _pick(rng, SHAPES, exclude=main.shape)
        second = Thing(other, _pick(rng, COLORS, exclude=main.color), "small", _texture(rng, other, "small"))
    position = POSITIONS[int(rng.integers(len(POSITIONS)))] if count == 1 else None
    return Scene(main, position, _pick(rng, BACKGROUNDS), _pick(rng, BACKGROUND_STYLES), second)


def _texture(rng: np.random.Generator, shape: str, size: str) -> str:
    """A texture that can be seen: an outlined circle would look like a ring, and stripes, dots or checks
    on a small object blur into a tint at small image sizes, so those are drawn solid."""
    texture = _weighted(rng, TEXTURES, (0.4, 0.55, 0.7, 0.85, 1.0))
    if texture == "outlined" and shape in ("circle", "ring"):
        return "solid"
    return "solid" if size == "small" and texture in ("striped", "dotted", "checkered") else texture


def _weighted(rng: np.random.Generator, options: tuple, cumulative: tuple[float, ...]):
    """`options[i]` with probability `cumulative[i] - cumulative[i-1]` (numpy's `choice(p=...)` is slow)."""
    return options[bisect.bisect_right(cumulative, rng.random())]


def _pick(rng: np.random.Generator, options, exclude: str | None = None) -> str:
    choices = [o for o in options if o != exclude]
    return choices[int(rng.integers(len(choices)))]


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One description of the scene; which details it gives, and in what words, vary with `rng`."""
    template = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
    noun_phrase = _noun_phrase(scene.main, rng)
    pos = f" {_choice(rng, POSITION_PHRASES[scene.position])}" if scene.position and rng.random() < 0.6 else ""
    sec = ""
    if scene.second is not None and rng.random() < 0.85:
        sec = f" {_choice(rng, ('and', 'next to', 'with'))} {_noun_phrase(scene.second, rng)}"
    style = {"plain": "", "gradient": "gradient ", "noisy": "noisy "}[scene.background_style]
    bgbare = f"{style if rng.random() < 0.5 else ''}{scene.background} background"
    bg = f" on {_article(bgbare)} {bgbare}" if rng.random() < 0.4 else ""
    be = "are" if scene.main.count > 1 else "is"
    return template.format(np=noun_phrase, NP=noun_phrase[0].upper() + noun_phrase[1:], pos=pos, sec=sec, bg=bg,
                           bgbare=bgbare, be=be)


def _noun_phrase(thing: Thing, rng: np.random.Generator) -> str:
    words = []
    if rng.random() < 0.7:
        words.append(thing.size)
    if thing.texture != "solid" and rng.random() < 0.85:
        words.append(_choice(rng, TEXTURE_WORDS[thing.texture]))
    words.append(thing.color)
    words.append(PLURALS.get(thing.shape, thing.shape + "s") if thing.count > 1 else thing.shape)
    phrase = " ".join(words)
    return f"{COUNT_WORDS[thing.count]} {phrase}" if thing.count > 1 else f"{_article(phrase)} {phrase}"


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def _choice(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def noise_caption(rng: np.random.Generator) -> str:
    """Web alt-text that says nothing about the image, or a caption of some other scene."""
    if rng.random() < 0.5:
        return caption(random_scene(rng), rng)
    return _choice(rng, NOISE_CAPTIONS).format(n=int(rng.integers(10_000)))


# --------------------------------------------------------------------------------------------- drawing


def render(scene: Scene, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw at twice the size and halve it (a box filter), which anti-aliases every edge cheaply.

    Whole-canvas work stays in PIL (fills, pastes through masks); numpy only builds the small masks,
    because numpy is slow at interleaved RGB.
    """
    side = size * SUPERSAMPLE
    canvas = _background(scene, side, rng)
    taken: list[tuple[float, float, float]] = []
    things = [scene.main] * scene.main.count + ([scene.second] if scene.second else [])
    for i, thing in enumerate(things):
        diameter = max(6, int(side * rng.uniform(*SIZES[thing.size])))
        anchor = scene.position if i == 0 and scene.position else None
        cx, cy = _place(rng, side, diameter, anchor, taken)
        taken.append((cx, cy, diameter / 2))
        _draw(canvas, thing, diameter, (int(round(cx - diameter / 2)), int(round(cy - diameter / 2))), rng)
    return canvas.reduce(SUPERSAMPLE)


def _background(scene: Scene, side: int, rng: np.random.Generator) -> Image.Image:
    base = [int(v) for v in np.array(BACKGROUNDS[scene.background]) + rng.integers(-10, 11, 3)]
    if scene.background_style == "plain":
        return Image.new("RGB", (side, side), tuple(base))
    if scene.background_style == "gradient":
        shade = _gradient(side, int(rng.integers(72)), sum(base) < 3 * 128)
    else:
        x, y = (int(v) for v in rng.integers(0, side, 2))
        shade = _noise(side).crop((x, y, x + side, y + side))
    # shade is centred on 128: background = base + shade - 128, clipped, all in PIL's C loops
    return ImageChops.add(Image.merge("RGB", (shade, shade, shade)), Image.new("RGB", (side, side), tuple(base)),
                          offset=-128)


@functools.lru_cache(maxsize=512)
def _gradient(side: int, direction: int, brighten: bool) -> Image.Image:
    """A linear ramp of +-35 around 128 in one of 72 directions (5 degrees apart), brightening or darkening."""
    angle = math.radians(5 * direction)
    ramp = np.linspace(-35 if brighten else 35, 35 if brighten else -35, side)
    return Image.fromarray((128 + math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None]).astype(np.uint8))


@functools.lru_cache(maxsize=4)
def _noise(side: int) -> Image.Image:
    """A fixed field of pixel noise, twice the canvas, that scenes crop at random offsets: drawing fresh
    noise per image would cost more than the rest of the image."""
    noise = np.random.default_rng(side).normal(128, 12, (2 * side, 2 * side))
    return Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))


def _place(rng: np.random.Generator, side: int, diameter: int, anchor: str | None,
           taken: list[tuple[float, float, float]]) -> tuple[float, float]:
    """A center that keeps the object inside the image, in its named cell, and off the others if it can."""
    low, high = diameter / 2, side - diameter / 2
    for _ in range(40):
        if anchor is not None:
            row, col = divmod(POSITIONS.index(anchor), 3)
            cx = (col + 0.5) * side / 3 + rng.uniform(-side / 14, side / 14)
            cy = (row + 0.5) * side / 3 + rng.uniform(-side / 14, side / 14)
        else:
            cx, cy = rng.uniform(low, high, 2)
        cx, cy = min(max(float(cx), low), high), min(max(float(cy), low), high)
        if all(math.hypot(cx - x, cy - y) > 0.9 * (diameter / 2 + r) for x, y, r in taken):
            break
    return cx, cy


def _draw(canvas: Image.Image, thing: Thing, diameter: int, corner: tuple[int, int], rng: np.random.Generator) -> None:
    mask = _shape_mask(thing.shape, diameter, rng.uniform(-15, 15))
    if thing.texture == "outlined":
        width = max(2 * SUPERSAMPLE + 1, diameter // 7) | 1  # at least two output pixels
        mask = ImageChops.subtract(mask, mask.filter(ImageFilter.MinFilter(width)))
    color = tuple(min(255, max(0, c + int(j))) for c, j in zip(COLORS[thing.color], rng.integers(-16, 17, 3),
                                                                strict=True))
    if thing.texture in ("striped", "dotted", "checkered"):
        canvas.paste(tuple(int(0.45 * c + 0.55 * 255) for c in color), corner, mask)
        orientation = int(rng.integers(4)) if thing.texture == "striped" else 0
        mask = ImageChops.multiply(mask, _pattern(thing.texture, diameter, orientation))
    canvas.paste(color, corner, mask)


def _shape_mask(shape: str, diameter: int, angle: float) -> Image.Image:
    """The shape, white on black, filling a `diameter`-wide square, turned by `angle` degrees."""
    image = Image.new("L", (diameter, diameter), 0)
    draw = ImageDraw.Draw(image)
    d = diameter - 1
    if shape in ("circle", "ring", "crescent"):
        draw.ellipse((0, 0, d, d), fill=255)
        if shape == "ring":
            draw.ellipse((0.26 * d, 0.26 * d, 0.74 * d, 0.74 * d), fill=0)
        elif shape == "crescent":
            dx, dy = 0.38 * d * math.cos(math.radians(angle)), 0.38 * d * math.sin(math.radians(angle))
            draw.ellipse((dx - 0.05 * d, dy - 0.05 * d, dx + 1.05 * d, dy + 1.05 * d), fill=0)
    else:
        theta = math.radians(angle)
        rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        points = (_OUTLINES[shape] @ rotation.T) * (d / 2) * 0.98 + d / 2
        draw.polygon(points.ravel().tolist(), fill=255)
    return image


def _polygon(n: int, start: float = -90.0) -> np.ndarray:
    angles = np.radians(start + np.arange(n) * 360.0 / n)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star() -> np.ndarray:
    outer, inner = _polygon(5), _polygon(5, start=-54.0) * 0.42
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _cross() -> np.ndarray:
    a = 1 / 3
    return np.array([(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a),
                     (-1, -a), (-a, -a)])


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    points = np.stack([x, y + 2.5], axis=1)
    return points / np.abs(points).max()


_OUTLINES = {
    "square": np.array([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]), "triangle": _polygon(3) * [1, 1.1],
    "star": _star(), "hexagon": _polygon(6), "diamond": np.array([(0, -1), (0.6, 0), (0, 1), (-0.6, 0)]),
    "cross": _cross(), "heart": _heart(),
}


@functools.lru_cache(maxsize=1024)
def _pattern(texture: str, diameter: int, orientation: int) -> Image.Image:
    """Where a textured object shows its colour (white) rather than a light tint of it (black)."""
    yy, xx = np.arange(diameter)[:, None], np.arange(diameter)[None, :]
    if texture == "striped":
        period = max(6, diameter // 4)
        theta = math.radians(45 * orientation)
        on = ((xx * math.cos(theta) + yy * math.sin(theta)) // (period / 2)) % 2 == 0
    elif texture == "dotted":
        period = max(6, diameter // 4)
        u, v = xx % period - period / 2, yy % period - period / 2
        on = u * u + v * v < (0.3 * period) ** 2
    else:
        cell = max(4, diameter // 4)
        on = (xx // cell + yy // cell) % 2 == 0
    return Image.fromarray(on.astype(np.uint8) * 255)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """JPEG without chroma subsampling: at 32-64 px, 4:2:0 would wash the colour out of thin outlines."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- writing


def synthesize(out: str | os.PathLike, config: SynthConfig | None = None, progress: bool = False) -> dict:
    """Write the dataset under `out` (see the module docstring); returns what `synth.json` records."""
    from tqdm import tqdm

    config = config or SynthConfig()
    root = Path(out)
    _claim(root, config)
    tasks = _tasks(config)
    workers = config.workers or min(len(tasks), os.cpu_count() or 1)
    written: dict[str, int] = {}
    with tqdm(total=sum(t[3] for t in tasks), desc="synthesizing", unit="img", disable=not progress) as bar:
        if workers > 1:
            # forkserver: workers forked from a clean server process, not from this one, whose threads (Ray's,
            # torch's) and signal handlers a forked worker would inherit (a pool that never ends its workers)
            context = get_context("forkserver")
            context.set_forkserver_preload([__name__, "pyarrow.parquet"])
            with context.Pool(workers) as pool:
                for name, count in pool.imap_unordered(_run_task, [(str(root), config) + t for t in tasks]):
                    written[name] = count
                    bar.update(count)
        else:
            for task in tasks:
                name, count = _run_task((str(root), config) + task)
                written[name] = count
                bar.update(count)
    return _finish(root, config, written)


def synthesized(out: str | os.PathLike, config: SynthConfig) -> bool:
    """Whether `out` holds the complete dataset of `config` (False: absent, or begun with the same settings and
    to be resumed). A dataset written with other settings is a `ConfigError` naming each difference: it is
    never overwritten, since other studies and runs may train on it, and never used in place of the one asked."""
    record = Path(out) / "synth.json"
    if not record.exists():
        return False
    try:
        written = json.loads(record.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"unreadable record of a synthetic dataset ({err}); delete the directory to write it "
                          "again", source=str(record)) from None
    previous, wanted = written.get("settings") or {}, config.settings()
    differences = [f"{name} {previous.get(name)!r} (written) vs {wanted.get(name)!r} (asked)"
                   for name in sorted(previous.keys() | wanted.keys()) if previous.get(name) != wanted.get(name)]
    if differences:
        raise ConfigError(f"holds a synthetic dataset written with other settings: {', '.join(differences)}; "
                          f"write it elsewhere, or delete {Path(out)} to write it again", source=str(record))
    return bool(written.get("complete"))


def _claim(root: Path, config: SynthConfig) -> None:
    """Refuse a directory that holds something else; record the settings so that a rerun can resume."""
    record = root / "synth.json"
    if record.exists():
        synthesized(root, config)
    elif root.exists() and any(root.iterdir()):
        raise ConfigError("exists and is not empty; choose a new directory for the synthetic dataset",
                          source=str(root))
    for sub in ("shards", "metadata", "eval/zeroshot", "eval/retrieval"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"settings": config.settings(), "complete": False}, indent=2) + "\n")


def _tasks(config: SynthConfig) -> list[tuple[str, int, int, int]]:
    """(split, task index, first sample, sample count): one shard, or one zero-shot class, per task."""
    tasks = []
    per = config.samples_per_shard
    for shard in range(math.ceil(config.samples / per)):
        tasks.append(("train", shard, shard * per, min(per, config.samples - shard * per)))
    for shard in range(math.ceil(config.retrieval_samples / per)):
        tasks.append(("retrieval", shard, shard * per, min(per, config.retrieval_samples - shard * per)))
    if config.zeroshot_per_class:
        for index, _ in enumerate(zeroshot_classes()):
            tasks.append(("zeroshot", index, index * config.zeroshot_per_class, config.zeroshot_per_class))
    return tasks


def zeroshot_classes() -> list[tuple[str, str]]:
    """(colour, shape) per class, in label order (the sorted order of the class folders)."""
    return sorted(((c, s) for c in COLORS for s in SHAPES), key=lambda cs: f"{cs[0]}_{cs[1]}")


def _run_task(task: tuple) -> tuple[str, int]:
    root, config, split, index, first, count = task
    root = Path(root)
    if split == "zeroshot":
        return _write_zeroshot_class(root / "eval" / "zeroshot", config, index, first, count)
    directory = root / ("shards" if split == "train" else "eval/retrieval")
    name = f"{index:08d}.tar"
    if not (directory / name).exists():
        make = _train_samples if split == "train" else _retrieval_samples
        records = [_record(uid, image, text, extra, config) for uid, image, text, extra in make(config, first, count)]
        if split == "train":  # metadata first: a shard that exists always has its metadata
            _write_metadata(root / "metadata" / f"{index:08d}.parquet", [meta for meta, _ in records], index)
        write_shard(directory / name, [members for _, members in records])
    return f"{directory.name}/{name}", count


def _train_samples(config: SynthConfig, first: int, count: int) -> Iterator[tuple[str, Image.Image, str, dict]]:
    for index in range(first, first + count):
        rng = _rng(config.seed, "train", index)
        scene = random_scene(rng, simple=config.scenes == "simple")
        image = render(scene, config.size, rng)
        matches = rng.random() >= config.caption_noise
        text = caption(scene, rng) if matches else noise_caption(rng)
        l14 = float(np.clip(rng.normal(0.31, 0.035) if matches else rng.normal(0.13, 0.045), 0, 1))
        b32 = float(np.clip(0.9 * l14 + rng.normal(0.03, 0.02), 0, 1))
        extra = {"clip_b32_similarity_score": round(b32, 6), "clip_l14_similarity_score": round(l14, 6),
                 "caption_matches": bool(matches), "labels": scene.labels()}
        yield uid_for(config.seed, "train", index), image, text, extra


def _retrieval_samples(config: SynthConfig, first: int, count: int) -> Iterator[tuple[str, Image.Image, str, dict]]:
    for index in range(first, first + count):
        rng = _rng(config.seed, "retrieval", index)
        scene = random_scene(rng, simple=config.scenes == "simple")
        image = render(scene, config.size, rng)
        captions: list[str] = []
        for _ in range(RETRIEVAL_CAPTIONS * 4):
            text = caption(scene, rng)
            if text not in captions:
                captions.append(text)
            if len(captions) == RETRIEVAL_CAPTIONS:
                break
        yield uid_for(config.seed, "retrieval", index), image, captions[0], {"captions": captions,
                                                                           "labels": scene.labels()}


def _record(uid: str, image: Image.Image, text: str, extra: dict, config: SynthConfig) -> tuple[dict, dict]:
    """The sample's json (DataComp's fields and the scene's ground truth) and its tar members."""
    meta = {"uid": uid, "key": uid, "url": f"synthetic://vitamin-nas/{uid}", "caption": text, "width": config.size,
            "height": config.size, "original_width": config.size, "original_height": config.size, **extra}
    return meta, {"__key__": uid, "jpg": encode_jpeg(image, config.jpeg_quality), "txt": text.encode(),
                  "json": json.dumps(meta, sort_keys=True).encode()}


def _write_metadata(path: Path, rows: list[dict], shard: int) -> None:
    columns = {"uid": [r["uid"] for r in rows], "url": [r["url"] for r in rows], "text": [r["caption"] for r in rows],
               "original_width": [r["original_width"] for r in rows],
               "original_height": [r["original_height"] for r in rows],
               "clip_b32_similarity_score": [r["clip_b32_similarity_score"] for r in rows],
               "clip_l14_similarity_score": [r["clip_l14_similarity_score"] for r in rows],
               "caption_matches": [r["caption_matches"] for r in rows], "shard": [shard] * len(rows)}
    for label in rows[0]["labels"] if rows else ():
        columns[label] = [r["labels"][label] for r in rows]
    write_parquet(path, columns)


def _write_zeroshot_class(directory: Path, config: SynthConfig, label: int, first: int, count: int) -> tuple[str, int]:
    color, shape = zeroshot_classes()[label]
    folder = directory / f"{color}_{shape}"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(first, first + count):
        target = folder / f"{index:06d}.jpg"
        if target.exists():
            continue
        rng = _rng(config.seed, "zeroshot", index)
        scene = random_scene(rng, shape=shape, color=color, alone=True, simple=config.scenes == "simple")
        image = render(scene, config.size, rng)
        partial = target.with_suffix(".partial")
        partial.write_bytes(encode_jpeg(image, config.jpeg_quality))
        partial.rename(target)
    return f"zeroshot/{folder.name}", count


def _finish(root: Path, config: SynthConfig, written: dict[str, int]) -> dict:
    shard_sizes = {name.split("/", 1)[1]: n for name, n in sorted(written.items()) if name.startswith("shards/")}
    retrieval_sizes = {name.split("/", 1)[1]: n for name, n in sorted(written.items()) if name.startswith("retrieval/")}
    write_sizes(root / "shards", shard_sizes)
    if retrieval_sizes:
        write_sizes(root / "eval" / "retrieval", retrieval_sizes)
    if config.zeroshot_per_class:
        write_zeroshot_prompts(root / "eval" / "zeroshot", [f"{c} {s}" for c, s in zeroshot_classes()],
                               ZEROSHOT_TEMPLATES)
    record = {"settings": config.settings(), "complete": True, "train_samples": config.samples,
              "train_shards": len(shard_sizes), "retrieval_samples": config.retrieval_samples,
              "zeroshot_classes": len(zeroshot_classes()) if config.zeroshot_per_class else 0,
              "zeroshot_images": config.zeroshot_per_class * len(zeroshot_classes()),
              "shapes": list(SHAPES), "colors": list(COLORS)}
    (root / "synth.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
