"""A real bad-shard set (a decompression bomb below PIL's own limit, a 1x1 image, keys written twice): each
sample skipped under its reason in the stream's stats and in `vitamin-nas data inspect`, the bomb never decoded
(what PIL was asked to do, and the peak memory of a real process), the limits settable."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import textwrap
from collections import Counter

import pytest
from data_helpers import BOMB_SIDE, uid, write_bad_shard
from PIL import Image, ImageFile

from nas.data import DataSource, stream
from nas.data.limits import MAX_PIXELS, MIN_SIDE
from nas.data.samples import SKIP_REASONS
from nas.errors import ConfigError

pytestmark = pytest.mark.timeout(180)

SKIPPED = Counter(too_large=1, too_small=1, duplicate_key=2)


@pytest.fixture
def bad_shard(tmp_path):
    return write_bad_shard(tmp_path / "00000000.tar")


def test_the_bomb_is_a_real_one(bad_shard):
    path, _ = bad_shard
    with tarfile.open(path) as tar:
        bomb = tar.extractfile(f"{uid(1)}.png").read()
    with pytest.warns(Image.DecompressionBombWarning):  # PIL warns, and would decode it: it refuses above 2x
        assert len(bomb) < 20_000 and Image.open(io.BytesIO(bomb)).size == (BOMB_SIDE, BOMB_SIDE)
    assert MAX_PIXELS < BOMB_SIDE**2 < 2 * Image.MAX_IMAGE_PIXELS


@pytest.mark.subprocess
def test_each_bad_sample_is_skipped_by_reason_and_the_bomb_never_decoded(bad_shard, monkeypatch):
    path, kept = bad_shard
    loaded = []  # the size of every image PIL was asked to decode
    load = ImageFile.ImageFile.load

    def recording_load(image):
        loaded.append(image.size)
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    loader, stats = stream(str(path), batch_size=2, image_size=16, workers=0, train=False)
    uids = [u for batch in loader for u in batch.uids]
    assert sorted(uids) == sorted(kept)  # sample 0 and sample 3 once each
    assert stats.skipped == SKIPPED and set(stats.skipped) <= set(SKIP_REASONS)
    assert "duplicate_key=2" in stats.summary() and "too_large=1" in stats.summary()
    assert (BOMB_SIDE, BOMB_SIDE) not in loaded and (1, 1) not in loaded
    assert (64, 48) in loaded and (12, 12) in loaded  # the PNG and the JPEGs that were used went through load


MEASURE = """
import json, sys
from nas.data import DataSource, stream

def peak_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))

source = DataSource(sys.argv[1], max_pixels=int(sys.argv[2]))
loader, stats = stream(source, batch_size=2, image_size=16, workers=0, train=False)
before = peak_kib()
uids = [u for batch in loader for u in batch.uids]
print(json.dumps({"growth_mb": (peak_kib() - before) / 1024, "samples": len(uids), "skipped": stats.skipped}))
"""


def measure(path, max_pixels: int) -> dict:
    """A real process streams the shard; the growth of its peak resident memory while it does."""
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(MEASURE), str(path), str(max_pixels)],
                         capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def test_the_bomb_costs_no_memory_unless_the_limit_lets_it_through(bad_shard):
    path, kept = bad_shard
    limited = measure(path, MAX_PIXELS)
    assert limited["samples"] == len(kept) and limited["skipped"] == SKIPPED
    assert limited["growth_mb"] < 100
    # The same process with a limit above the bomb: PIL decodes it (432 MB of RGB), and the measurement sees it.
    unlimited = measure(path, BOMB_SIDE**2)
    assert unlimited["samples"] == len(kept) + 1 and "too_large" not in unlimited["skipped"]
    assert unlimited["growth_mb"] > 400


def test_inspect_counts_each_reason(bad_shard, run_cli):
    path, kept = bad_shard
    run = run_cli("data", "inspect", path, "--workers", "1")
    assert run.returncode == 0, run.stderr
    assert f"samples: {len(kept)}" in run.stdout
    assert "skipped: duplicate_key=2, too_large=1, too_small=1" in run.stdout
    assert "image shorter side: min 12, median 12, max 48" in run.stdout
    run = run_cli("data", "inspect", path, "--workers", "1", "--min-side", "13")
    assert run.returncode == 0, run.stderr
    assert "samples: 1" in run.stdout  # the 64x48 PNG; the three 12 px JPEGs join the 1x1 as too small
    assert "skipped: duplicate_key=2, too_large=1, too_small=4" in run.stdout


def test_the_limits_are_source_fields_with_documented_defaults(bad_shard, tmp_path):
    path, _ = bad_shard
    assert DataSource("x").limits.max_pixels == MAX_PIXELS == 40_000_000 and DataSource("x").min_side == MIN_SIDE == 8
    for source, used, skipped in (
            (DataSource(str(path), min_side=13), [5], {"too_large": 1, "too_small": 4}),  # the JPEGs are 12 px
            (DataSource(str(path), max_pixels=3000), [0, 3, 4], {"too_large": 2, "too_small": 1})):  # PNG: 3,072
        loader, stats = stream(source, batch_size=2, image_size=16, workers=0, train=False)
        assert sorted(u for batch in loader for u in batch.uids) == sorted(uid(i) for i in used)
        assert stats.skipped == {"duplicate_key": 2, **skipped}
    for name in ("max_pixels", "min_side"):
        with pytest.raises(ConfigError) as info:
            DataSource("x", **{name: 0})
        assert info.value.field == name
