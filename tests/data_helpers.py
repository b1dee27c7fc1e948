"""Real DataComp-format tar shards for the data tests, written with the standard library's tarfile so that
the tests can also write the broken shards that the web produces."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def uid(index: int) -> str:
    return hashlib.md5(f"test-sample-{index}".encode()).hexdigest()


def jpeg(index: int, size: int = 12) -> bytes:
    pixels = np.random.default_rng(index).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def sample(index: int, **files: bytes | None) -> list[tuple[str, bytes]]:
    """The members of sample `index`; a keyword overrides a member, None leaves it out."""
    members = {"jpg": jpeg(index), "txt": f"caption of sample {index}".encode(),
               "json": json.dumps({"uid": uid(index), "caption": f"caption of sample {index}"}).encode()}
    members.update(files)
    return [(f"{uid(index)}.{ext}", data) for ext, data in members.items() if data is not None]


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_shards(directory: Path, shards: int, per_shard: int, first: int = 0) -> list[int]:
    """`shards` good shards of `per_shard` samples (indices from `first`), with DataComp's sizes.json."""
    directory.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for shard in range(shards):
        start = first + shard * per_shard
        members = [m for i in range(start, start + per_shard) for m in sample(i)]
        name = f"{shard:08d}.tar"
        write_tar(directory / name, members)
        sizes[name] = per_shard
    (directory / "sizes.json").write_text(json.dumps(sizes))
    return list(range(first, first + shards * per_shard))


def member_offset(path: Path, name: str, data: bool) -> int:
    """Byte offset of a member's header (or of its data) in a tar file, to cut the file there."""
    with tarfile.open(path) as tar:
        member = tar.getmember(name)
        return member.offset_data if data else member.offset


def cut(path: Path, offset: int) -> None:
    path.write_bytes(path.read_bytes()[:offset])


def png(width: int, height: int, mode: str = "RGB", seed: int = 0) -> bytes:
    """A PNG of random pixels (mode "1" at 0: an all-black bilevel image that compresses ~1000:1)."""
    if mode == "1":
        image = Image.new("1", (width, height))
    else:
        image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


BOMB_SIDE = 12_000


def write_bad_shard(path: Path) -> tuple[Path, list[str]]:
    """A shard as the web makes them, with one of each new kind of bad sample; and the uids a stream keeps.

    Sample 1 is a decompression bomb below PIL's own limit: a 12,000 x 12,000 PNG of ~18 KB (one bit per pixel,
    all zero) that PIL alone decodes to 432 MB of RGB. Sample 2 is a 1x1 image. Sample 3 is written twice in a
    row and sample 0 again at the end: each repeat is a `duplicate_key`. Sample 5 is a good PNG.
    """
    members = (sample(0) + sample(1, jpg=None, png=png(BOMB_SIDE, BOMB_SIDE, mode="1"))
               + sample(2, jpg=jpeg(2, size=1)) + sample(3) + sample(3) + sample(4)
               + sample(5, jpg=None, png=png(64, 48)) + sample(0))
    return write_tar(path, members), [uid(i) for i in (0, 3, 4, 5)]
