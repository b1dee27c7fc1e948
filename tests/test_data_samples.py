"""Broken shards and samples, as downloads produce them: skipped, counted by reason, never fatal."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from data_helpers import cut, jpeg, member_offset, sample, uid, write_shards, write_tar

from nas.data import dataset_size, expand_shards, select_shards, stream
from nas.data.samples import SKIP_REASONS, read_shard
from nas.errors import ConfigError

pytestmark = pytest.mark.timeout(120)


def read(path) -> tuple[list[str], Counter]:
    skipped: Counter = Counter()
    return [s.uid for s in read_shard(str(path), skipped)], skipped


def test_each_kind_of_broken_sample_is_skipped_under_its_reason(tmp_path):
    members = (sample(0) + sample(1, jpg=None) + sample(2, txt=None) + sample(3, txt=b"  \n")
               + sample(4, txt=b"\xff\xfe bad") + sample(5, jpg=b"\xff\xd8 not really a jpeg") + sample(6)
               + sample(7, jpg=jpeg(7)[:60]))
    uids, skipped = read(write_tar(tmp_path / "mixed.tar", members))
    assert uids == [uid(0), uid(5), uid(6), uid(7)]  # images are decoded later, in the stream
    assert skipped == {"missing_image": 1, "missing_caption": 1, "empty_caption": 1, "undecodable_caption": 1}
    loader, stats = stream(str(tmp_path / "mixed.tar"), batch_size=2, image_size=8, workers=0, train=False)
    assert sorted(u for batch in loader for u in batch.uids) == sorted([uid(0), uid(6)])
    assert stats.skipped == {"missing_image": 1, "missing_caption": 1, "empty_caption": 1,
                             "undecodable_caption": 1, "corrupt_image": 2}
    assert set(stats.skipped) <= set(SKIP_REASONS)
    assert "corrupt_image=2" in stats.summary()


def test_repeated_and_interleaved_members_are_named_apart_from_duplicate_samples(tmp_path):
    """A caption written twice in a row is a `repeated_member` (the sample is used with its first caption);
    two samples whose files are interleaved (a.jpg b.jpg a.txt b.txt) are `interleaved_members`, once each,
    not also `missing_caption`; a whole sample again is a `duplicate_key`. All were counted as duplicate_key."""
    a, b = sample(1), sample(2)
    members = (sample(0) + [(f"{uid(0)}.txt", b"a second caption")]  # repeated member
               + [a[0], b[0], a[1], b[1], a[2], b[2]]  # interleaved: 1.jpg 2.jpg 1.txt 2.txt 1.json 2.json
               + sample(3) + sample(4) + sample(3)  # a duplicate sample
               + sample(5, txt=None))  # a part with nothing to complete it
    uids, skipped = read(write_tar(tmp_path / "mixed.tar", members))
    assert uids == [uid(0), uid(3), uid(4)]
    assert skipped == {"repeated_member": 1, "interleaved_members": 2, "duplicate_key": 1, "missing_caption": 1}
    assert set(skipped) <= set(SKIP_REASONS)


def test_a_tar_cut_inside_a_file_keeps_the_samples_before_the_cut(tmp_path):
    path = write_tar(tmp_path / "cut.tar", [m for i in range(5) for m in sample(i)])
    first, fourth = (member_offset(path, f"{uid(i)}.jpg", data=True) + 10 for i in (0, 3))
    cut(path, fourth)
    uids, skipped = read(path)
    assert uids == [uid(0), uid(1), uid(2)]
    assert skipped == {"truncated_tar": 1}
    cut(path, first)
    assert read(path) == ([], Counter({"truncated_tar": 1}))  # a tar all the same, not an unreadable file


def test_a_tar_cut_inside_a_header_is_noticed(tmp_path):
    path = write_tar(tmp_path / "cut.tar", [m for i in range(5) for m in sample(i)])
    cut(path, member_offset(path, f"{uid(3)}.jpg", data=False) + 100)
    uids, skipped = read(path)
    assert uids == [uid(0), uid(1)]  # sample 2 may be incomplete for all the reader can tell
    assert skipped == {"truncated_tar": 1}


def test_unreadable_shards_are_counted_per_shard(tmp_path):
    (tmp_path / "garbage.tar").write_bytes(os.urandom(3000))
    (tmp_path / "empty.tar").write_bytes(b"")
    for name in ("garbage.tar", "empty.tar"):
        assert read(tmp_path / name) == ([], Counter({"unreadable_shard": 1}))
    assert read("pipe:exit 3") == ([], Counter({"unreadable_shard": 1}))


def test_a_stream_over_good_and_broken_shards_delivers_the_good_and_counts_the_rest(tmp_path):
    good = write_shards(tmp_path, shards=2, per_shard=6)
    (tmp_path / "00000002.tar").write_bytes(os.urandom(2000))
    truncated = write_tar(tmp_path / "00000003.tar", [m for i in range(100, 104) for m in sample(i)])
    cut(truncated, member_offset(truncated, f"{uid(102)}.txt", data=True))
    loader, stats = stream(str(tmp_path), batch_size=4, image_size=8, workers=2)
    seen = [u for batch in loader for u in batch.uids]
    assert sorted(seen) == sorted([uid(i) for i in good] + [uid(100), uid(101)])
    assert stats.skipped == {"unreadable_shard": 1, "truncated_tar": 1}
    assert stats.samples_seen == len(seen) == 14


def test_an_abandoned_pipe_is_not_counted_as_broken(tmp_path):
    write_shards(tmp_path, shards=1, per_shard=5)
    skipped: Counter = Counter()
    samples = read_shard(f"pipe:cat {tmp_path}/00000000.tar", skipped)
    next(samples)
    samples.close()
    assert skipped == {}


def test_expansion_of_patterns_directories_and_lists(tmp_path):
    write_shards(tmp_path / "a", shards=3, per_shard=1)
    write_shards(tmp_path / "b", shards=2, per_shard=1)
    a, b = tmp_path / "a", tmp_path / "b"
    assert expand_shards(str(a)) == [str(a / f"0000000{i}.tar") for i in range(3)]
    assert expand_shards(f"{a}/0000000{{0..1}}.tar::{b}") == [str(a / "00000000.tar"), str(a / "00000001.tar"),
                                                               str(b / "00000000.tar"), str(b / "00000001.tar")]
    assert expand_shards(["https://example.org/{0..1}.tar"]) == ["https://example.org/0.tar",
                                                                  "https://example.org/1.tar"]
    with pytest.raises(ConfigError, match=r"7 of 10 shards not found .*00000003.tar, .*00000004.tar"):
        expand_shards(f"{a}/0000000{{0..9}}.tar")
    with pytest.raises(ConfigError, match="no .tar shards"):
        expand_shards(str(tmp_path / "a" / "..") + "/")


def test_shard_selection_and_dataset_size(tmp_path):
    write_shards(tmp_path, shards=5, per_shard=3)
    urls = expand_shards(str(tmp_path))
    assert select_shards(urls, 2) == urls[:2]
    chosen = select_shards(urls, 3, "random", seed=1)
    assert chosen == select_shards(urls, 3, "random", seed=1) and len(set(chosen)) == 3
    assert chosen == sorted(chosen)  # kept in shard order
    assert dataset_size(urls) == 15 and dataset_size(urls[:2]) == 6
    assert dataset_size(["pipe:cat x.tar"]) is None
    with pytest.raises(ConfigError, match="shards"):
        select_shards(urls, 6)


def test_inspect_reports_what_a_stream_would_skip(tmp_path, run_cli):
    write_shards(tmp_path, shards=2, per_shard=4)
    write_tar(tmp_path / "00000002.tar", sample(50, txt=b"") + sample(51, jpg=b"junk"))
    result = run_cli("data", "inspect", tmp_path, "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "shards: 3" in result.stdout and "samples: 8" in result.stdout
    assert "corrupt_image=1" in result.stdout and "empty_caption=1" in result.stdout
    assert "caption of sample" in result.stdout
