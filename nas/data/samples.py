"""Reading DataComp-format samples out of tar shards, skipping and counting what is broken.

A DataComp shard holds, per sample, `<key>.jpg` (or .png, .webp, .jpeg), `<key>.txt` (the caption) and
`<key>.json` (the uid, url, sizes and scores). Web-scale shards are never clean: downloads fail, files end
early, images do not decode. None of that may stop a run, and none of it may pass silently, so every
skipped sample or shard is counted under one of `SKIP_REASONS`.
"""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image
from webdataset.gopen import gopen
from webdataset.tariterators import base_plus_ext

from nas.data.limits import DEFAULT_LIMITS, ImageLimits
from nas.data.stall import watched

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")

SKIP_REASONS = {
    "unreadable_shard": "a shard could not be opened or is not a tar file (counted per shard)",
    "truncated_tar": "a shard ended early or broke mid-way; samples before the break are kept (per shard)",
    "missing_image": "a sample has no .jpg/.jpeg/.png/.webp file",
    "missing_caption": "a sample has no .txt file",
    "empty_caption": "a sample's .txt is empty or only whitespace",
    "undecodable_caption": "a sample's .txt is not UTF-8 text",
    "corrupt_image": "a sample's image does not decode (truncated, wrong format)",
    "too_large": "a sample's image has more pixels than `max_pixels` (seen in its header, never decoded)",
    "too_small": "a sample's image has a side shorter than `min_side` pixels",
    "duplicate_key": "a shard holds a whole sample's key again: the first is used, each repeat skipped",
    "repeated_member": "a sample's file (its .txt, say) comes again right after it: the sample is used as first "
                       "given, each repeat skipped",
    "interleaved_members": "a sample's files are split by another sample's (a.jpg b.jpg a.txt): its parts after the "
                           "split are skipped (the whole sample, unless it was whole before), once per sample",
    "no_metadata_row": "captions come from the metadata (`captions`) and it has no row for the sample's uid",
}
"""Why a sample or shard was skipped. `StreamStats.skipped` counts by these names."""

class ImageRejected(ValueError):
    """An image refused from its header alone, with the `SKIP_REASONS` name of why."""

    def __init__(self, reason: str, size: tuple[int, int]):
        super().__init__(f"{reason}: {size[0]}x{size[1]}")
        self.reason = reason


@dataclass(frozen=True)
class RawSample:
    """One sample as stored: the image still encoded, so that it can be shuffled and filtered cheaply."""

    uid: str
    caption: str
    image: bytes
    url: str
    meta: dict


def read_shard(url: str, skipped: Counter, timeout: float | None = None) -> Iterator[RawSample]:
    """Yield the complete samples of one shard, counting into `skipped` whatever is skipped and why. With
    `timeout`, a command or URL that sends nothing for that many seconds raises `nas.data.stall.DataStalled`.

    A key seen before in the shard is skipped: as `duplicate_key` when both are whole samples (a resharding or
    download that wrote a sample twice), so that no sample weighs double in a pass; as `repeated_member` when
    the repeat follows at once and is a part (a .txt written again); as `interleaved_members` when another
    sample's files came between the parts (then the earlier part is not counted as missing its image or caption:
    parts are judged at the shard's end).
    """
    try:
        stream = watched(gopen(url, "rb"), url, timeout)
    except (OSError, ValueError):
        skipped["unreadable_shard"] += 1
        return
    is_tar = False  # once a first header parses, any later failure is a cut, not an unreadable shard
    whole: dict[str, bool] = {}  # each key seen: whether its first group was a whole sample
    parts: dict[str, str] = {}  # keys whose first group was a part, with what it lacks (counted at the end)
    interleaved: set[str] = set()
    previous = None
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*", tarinfo=_EndAwareTarInfo)
        is_tar = True
        for key, files in _grouped(tar):
            is_whole = _missing(files) is None
            if key in whole:
                if is_whole and whole[key]:
                    skipped["duplicate_key"] += 1
                elif key == previous:  # counted once: the part before it is not missing anything
                    parts.pop(key, None)
                    skipped["repeated_member"] += 1
                elif key not in interleaved:
                    parts.pop(key, None)
                    interleaved.add(key)
                    skipped["interleaved_members"] += 1
                previous = key
                continue
            whole[key], previous = is_whole, key
            if not is_whole:
                parts[key] = _missing(files)
                continue
            sample = _complete(key, files, url, skipped)
            if sample is not None:
                yield sample
        stream.close()  # a pipe reports its command's exit status here
    except (OSError, EOFError, tarfile.TarError, ValueError):
        skipped["truncated_tar" if is_tar else "unreadable_shard"] += 1
    finally:
        skipped.update(parts.values())
        _close_quietly(stream)


class _EndAwareTarInfo(tarfile.TarInfo):
    """Notes a header cut short, which `tarfile` otherwise takes silently for the end of the archive."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except (tarfile.TruncatedHeaderError, tarfile.EmptyHeaderError):
            tar.ended_early = True
            raise


def _close_quietly(stream: object) -> None:
    """Close a shard that is abandoned part-way (a consumer stopped): its pipe's exit status is moot."""
    try:
        stream.close()
    except (OSError, ValueError):
        pass


def _grouped(tar: tarfile.TarFile) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Consecutive tar members that share a key, as webdataset groups them (by `base_plus_ext`).

    The last group of a cut-off archive may lack files, so a cut raises instead of yielding it.
    """
    key: str | None = None
    files: dict[str, bytes] = {}
    for member in tar:
        if not member.isreg():
            continue
        prefix, suffix = base_plus_ext(member.name)
        if prefix is None or prefix.rsplit("/", 1)[-1].startswith("__"):
            continue
        suffix = suffix.lower()
        if prefix != key or suffix in files:
            if key is not None:
                yield key, files
            key, files = prefix, {}
        files[suffix] = tar.extractfile(member).read()
    if getattr(tar, "ended_early", False):
        raise tarfile.ReadError("archive ends in the middle of a header")
    if key is not None:
        yield key, files


def _missing(files: dict[str, bytes]) -> str | None:
    """What a sample's files lack to be a whole sample (`missing_image`, `missing_caption`), or None."""
    if not any(ext in files for ext in IMAGE_EXTENSIONS):
        return "missing_image"
    return None if "txt" in files else "missing_caption"


def _complete(key: str, files: dict[str, bytes], url: str, skipped: Counter) -> RawSample | None:
    image = next(files[ext] for ext in IMAGE_EXTENSIONS if ext in files)
    try:
        caption = files["txt"].decode("utf-8").strip()
    except UnicodeDecodeError:
        skipped["undecodable_caption"] += 1
        return None
    if not caption:
        skipped["empty_caption"] += 1
        return None
    meta = _meta(files.get("json"))
    uid = meta.get("uid")
    return RawSample(uid=uid if isinstance(uid, str) else key.rsplit("/", 1)[-1], caption=caption,
                     image=image, url=url, meta=meta)


def _meta(raw: bytes | None) -> dict:
    """The sample's json, or {} when absent or broken: the metadata is optional, the pair is what counts."""
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def decode_image(data: bytes, limits: ImageLimits | None = None) -> Image.Image:
    """Decode fully to RGB, so that a truncated file fails here and not later inside a transform.

    With `limits`, the size is checked first, from the header that `Image.open` reads (it decodes no pixel):
    an image out of bounds raises `ImageRejected` without having been decoded.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError:
            if limits is None:
                raise
            raise ImageRejected("too_large", (0, 0)) from None
        if limits is not None:
            width, height = image.size
            if width * height > limits.max_pixels:
                raise ImageRejected("too_large", image.size)
            if min(width, height) < limits.min_side:
                raise ImageRejected("too_small", image.size)
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")


def decode_or_count(sample: RawSample, skipped: Counter, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image | None:
    """The sample's image in RGB, or None (counted as `too_large`, `too_small` or `corrupt_image`)."""
    try:
        return decode_image(sample.image, limits)
    except ImageRejected as rejected:
        skipped[rejected.reason] += 1
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        skipped["corrupt_image"] += 1
    return None


def decoded(samples: Iterator[RawSample], skipped: Counter,
            limits: ImageLimits = DEFAULT_LIMITS) -> Iterator[tuple[RawSample, Image.Image]]:
    """Pair each sample with its decoded image, skipping (and counting) those that do not decode."""
    for sample in samples:
        image = decode_or_count(sample, skipped, limits)
        if image is not None:
            yield sample, image
