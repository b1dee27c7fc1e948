"""The training stream over real tar shards and real DataLoader workers: passes, budgets, ranks, order."""

from __future__ import annotations

import functools
import http.server
import re
import sys
import threading
import time
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from data_helpers import uid, write_shards
from search_helpers import processes_mentioning

from nas.data import Augment, BatchPlan, DataSource, StreamSettings, UidSet, connect, stream
from nas.data.stall import DataStalled
from nas.errors import ConfigError

pytestmark = pytest.mark.timeout(120)

SMALL = {"batch_size": 4, "image_size": 8, "workers": 2, "context_length": 16}


def run(source, **options) -> tuple[list[list[str]], list[torch.Tensor], object]:
    """Every batch's uids and images, and the stats, of one full iteration."""
    loader, stats = stream(source, **{**SMALL, **options})
    uids, images = [], []
    for batch in loader:
        uids.append(batch.uids)
        images.append(batch.images)
    return uids, images, stats


def flat(batches: list[list[str]]) -> list[str]:
    return [u for batch in batches for u in batch]


@pytest.fixture
def shards(tmp_path):
    """4 shards of 10 samples."""
    indices = write_shards(tmp_path / "shards", shards=4, per_shard=10)
    return tmp_path / "shards", [uid(i) for i in indices]


def test_one_pass_sees_every_sample_exactly_once_over_workers_and_ranks(shards):
    directory, expected = shards
    seen = []
    for rank in range(2):
        batches, _, stats = run(str(directory), train=False, rank=rank, world_size=2)
        seen += flat(batches)
        assert stats.samples_seen == len(flat(batches)) and stats.total_skipped == 0
    assert sorted(seen) == sorted(expected)


def test_fewer_shards_than_workers_times_ranks_neither_hangs_nor_repeats(tmp_path):
    indices = write_shards(tmp_path, shards=1, per_shard=11)
    seen = []
    for rank in range(3):  # 1 shard, 3 ranks x 2 workers = 6 slots
        batches, _, _ = run(str(tmp_path / "00000000.tar"), rank=rank, world_size=3)
        assert flat(batches), f"rank {rank} got no data"
        seen += flat(batches)
    assert sorted(seen) == sorted(uid(i) for i in indices)


def test_budget_is_exact_and_every_rank_draws_the_same_batches(tmp_path):
    write_shards(tmp_path, shards=2, per_shard=7)  # 14 samples, so 50 samples take several passes
    sizes_per_rank = []
    total = 0
    for rank in range(2):
        loader, stats = stream(str(tmp_path), samples=50, rank=rank, world_size=2, **SMALL)
        sizes = [len(batch.uids) for batch in loader]
        assert len(sizes) == len(loader) == 7
        assert stats.samples_seen == sum(sizes) == 25
        sizes_per_rank.append(sizes)
        total += sum(sizes)
    assert total == 50
    assert sizes_per_rank[0] == sizes_per_rank[1] == [4, 4, 4, 4, 4, 4, 1]


def test_budget_passes_never_repeat_a_sample_within_a_pass(tmp_path):
    indices = write_shards(tmp_path, shards=3, per_shard=5)
    batches, _, _ = run(str(tmp_path), samples=45, workers=0)  # one slot: its passes are the data's passes
    order = flat(batches)
    for start in range(0, 45, 15):
        assert sorted(order[start : start + 15]) == sorted(uid(i) for i in indices)


def test_resampled_budget_is_exact(tmp_path):
    write_shards(tmp_path, shards=3, per_shard=5)
    batches, _, stats = run(str(tmp_path), samples=30, resample=True)
    assert len(flat(batches)) == stats.samples_seen == 30


def test_shuffle_and_augmentation_are_reproducible_from_the_seed(shards):
    directory, expected = shards
    options = {"samples": 40, "augment": Augment.vitamin_long()}
    first_uids, first_images, _ = run(str(directory), seed=3, **options)
    again_uids, again_images, _ = run(str(directory), seed=3, **options)
    other_uids, _, _ = run(str(directory), seed=4, **options)
    assert first_uids == again_uids
    assert all(torch.equal(a, b) for a, b in zip(first_images, again_images, strict=True))
    assert flat(first_uids) != flat(other_uids)
    assert flat(first_uids) != expected  # actually shuffled


def test_resume_continues_with_the_batches_an_uninterrupted_run_draws(shards):
    directory, _ = shards
    full_uids, full_images, _ = run(str(directory), samples=48, seed=1)
    resumed_uids, resumed_images, stats = run(str(directory), samples=48, seed=1, start_sample=20)
    assert resumed_uids == full_uids[5:]  # an odd step: the other worker's turn comes first
    assert all(torch.equal(a, b) for a, b in zip(resumed_images, full_images[5:], strict=True))
    assert stats.samples_seen == 28


def test_a_source_connected_to_a_run_opens_its_stream_where_the_run_stands(shards):
    """`connect` binds a source to one run's settings and rank; each call opens that run's stream at a position."""
    directory, _ = shards
    full_uids, _, _ = run(str(directory), samples=48, seed=1, rank=1, world_size=2)
    run_stream = connect(DataSource(str(directory)), StreamSettings(samples=48, seed=1, **SMALL), rank=1, world_size=2)
    assert run_stream.stats is None
    assert [batch.uids for batch in run_stream(0)] == full_uids
    assert [batch.uids for batch in run_stream(16)] == full_uids[2:]
    assert run_stream.stats.samples_seen == len(flat(full_uids[2:]))


def test_a_stream_resumed_at_its_end_draws_nothing(shards):
    finished, _ = stream(str(shards[0]), samples=48, seed=1, start_sample=48, **SMALL)
    assert len(finished) == 0 and list(finished) == []


def test_resume_must_start_at_a_batch_boundary(shards):
    with pytest.raises(ConfigError, match="start_sample"):
        stream(str(shards[0]), samples=48, start_sample=6, **SMALL)


def test_batches_are_open_clip_ready(shards):
    loader, _ = stream(str(shards[0]), train=False, **SMALL)
    batch = next(iter(loader))
    assert batch.images.shape == (4, 3, 8, 8) and batch.images.dtype == torch.float32
    assert batch.texts.shape == (4, 16) and batch.texts.dtype == torch.int64
    assert (batch.texts[:, 0] == 49406).all()  # CLIP's start-of-text token
    assert ((batch.texts == 49407).sum(dim=1) == 1).all()  # and one end-of-text token each
    images, texts, uids = batch  # unpacks as the trainer does
    assert len(uids) == 4


def test_uid_allow_list_keeps_only_its_samples(shards, tmp_path):
    directory, expected = shards
    keep = expected[::3]
    for name in ("keep.npy", "keep.parquet"):
        UidSet.from_uids(keep).save(tmp_path / name)
        batches, _, stats = run(str(directory), train=False, subset=str(tmp_path / name))
        assert sorted(flat(batches)) == sorted(keep)
        assert stats.filtered == len(expected) - len(keep)


def test_captions_from_the_metadata_replace_the_shards_own(shards, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nas.data import tokenizer

    directory, expected = shards
    rows = expected[:-5]  # the last five samples have no metadata row: skipped and counted
    (tmp_path / "metadata").mkdir()
    for shard in range(4):  # one file per shard, named as the shard (DataComp's layout), each read on its own
        mine = [(i, u) for i, u in enumerate(rows) if i // 10 == shard]
        pq.write_table(pa.table({"uid": [u for _, u in mine], "color": [["red", "blue"][i % 2] for i, _ in mine],
                                 "n": [i for i, _ in mine]}), tmp_path / "metadata" / f"{shard:08d}.parquet")
    loader, stats = stream(str(directory), train=False, captions="a {color} thing, number {n}",
                           metadata=str(tmp_path / "metadata"), **SMALL)
    tokenize = tokenizer(context_length=16)
    seen = []
    for batch in loader:
        for uid_, tokens in zip(batch.uids, batch.texts, strict=True):
            index = rows.index(uid_)
            expected_caption = f"a {['red', 'blue'][index % 2]} thing, number {index}"
            assert torch.equal(tokens, tokenize([expected_caption])[0])
            seen.append(uid_)
    assert sorted(seen) == sorted(rows) and stats.skipped == Counter(no_metadata_row=5)

    with pytest.raises(ConfigError, match=r"no column\(s\) shape.*it has uid, color, n") as missing:
        stream(str(directory), captions="{color} {shape}", metadata=str(tmp_path / "metadata"), **SMALL)
    assert missing.value.field == "captions"
    with pytest.raises(ConfigError, match="template over metadata columns"):
        stream(str(directory), captions="no fields", metadata=str(tmp_path / "metadata"), **SMALL)
    with pytest.raises(ConfigError) as alone:
        DataSource(str(directory), captions="{color}")
    assert alone.value.field == "metadata"


def test_first_and_random_shard_subsets(shards):
    directory, expected = shards
    first, _, _ = run(str(directory), train=False, shards=2)
    assert sorted(flat(first)) == sorted(expected[:20])
    chosen, _, _ = run(str(directory), train=False, shards=2, shard_selection="random", seed=5)
    again, _, _ = run(str(directory), train=False, shards=2, shard_selection="random", seed=5)
    assert sorted(flat(chosen)) == sorted(flat(again))
    by_shard = Counter(expected.index(u) // 10 for u in flat(chosen))
    assert len(by_shard) == 2 and set(by_shard.values()) == {10}


def test_pipe_and_http_sources_read_the_same_samples(shards):
    directory, expected = shards
    piped, _, _ = run(f"pipe:cat {directory}/0000000{{0..3}}.tar", train=False)
    assert sorted(flat(piped)) == sorted(expected)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/0000000{{0..3}}.tar"
        fetched, _, _ = run(url, train=False)
    finally:
        server.shutdown()
    assert sorted(flat(fetched)) == sorted(expected)


def test_a_source_that_stops_sending_fails_after_its_timeout_and_its_command_ends(shards, tmp_path):
    """A real `pipe:` that sends nothing (a hung S3 copy): the stream's first look at the data (in this process)
    and a DataLoader worker reading it after a good shard each fail with "data stalled" after `timeout` seconds
    instead of waiting for ever, and the command (under its shell) is ended."""
    directory, _ = shards
    marker = tmp_path / "stalled"  # names this test's sleeps: only they are looked for
    stalled = f"pipe:{sys.executable} -c 'import time; time.sleep(60)' {marker}"  # under a shell
    begin = time.time()
    with pytest.raises(DataStalled, match=f"^data stalled: no data from {re.escape(stalled)} for 2 s "
                                          r"\(data.timeout\)$"):
        stream(stalled, **SMALL, timeout=2)
    waited = time.time() - begin
    loader, _ = stream([str(directory / "00000000.tar"), stalled], **{**SMALL, "workers": 1}, samples=40, timeout=2)
    with pytest.raises(DataStalled, match=f"data stalled: no data from {re.escape(stalled)}"):
        list(loader)
    print(f"stalled source: failed after {waited:.1f} s (timeout 2 s); in a worker after {time.time() - begin:.1f} s")
    assert 2 <= waited < 10
    assert not processes_mentioning(str(marker))


def test_a_path_that_does_not_exist_fails_at_once(tmp_path):
    with pytest.raises(ConfigError, match="4 of 4 shards not found") as err:
        stream(str(tmp_path / "missing" / "{00000000..00000003}.tar"), **SMALL)
    assert "missing" in str(err.value)


def test_shards_without_a_readable_sample_fail_at_once(tmp_path):
    (tmp_path / "a.tar").write_bytes(b"not a tar file at all" * 30)
    with pytest.raises(ConfigError, match="no readable sample"):
        stream(str(tmp_path / "a.tar"), **SMALL)


def test_a_budget_that_can_never_be_met_stops_with_an_error(shards, tmp_path):
    directory, _ = shards
    UidSet.from_uids([uid(10_000 + i) for i in range(3)]).save(tmp_path / "none.npy")  # matches no sample
    options = {**SMALL, "workers": 1}  # raised in a worker process, reported in this one
    loader, _ = stream(str(directory), samples=8, subset=str(tmp_path / "none.npy"), **options)
    with pytest.raises(RuntimeError, match="no usable sample"):
        list(loader)


def test_a_source_from_a_study_file_names_bad_fields():
    source = DataSource.from_dict({"urls": ["a.tar", "b.tar"], "augment": "vitamin_long", "shards": 2})
    assert source.urls == ("a.tar", "b.tar") and source.augment.grayscale_prob == 0.2
    with pytest.raises(ConfigError, match="unknown field"):
        DataSource.from_dict({"urls": "a.tar", "shard": 8}, source="study.yaml")
    with pytest.raises(ConfigError, match="unknown field.*batch_size"):  # the run decides, not the data
        DataSource.from_dict({"urls": "a.tar", "batch_size": 8}, source="study.yaml")
    with pytest.raises(ConfigError, match="shuffle_buffer"):
        DataSource.from_dict({"urls": "a.tar", "shuffle_buffer": 0}, source="study.yaml")
    with pytest.raises(ConfigError, match="augment.scale"):
        DataSource.from_dict({"urls": "a.tar", "augment": {"scale": [0.5, 2.0]}})
    with pytest.raises(ConfigError, match="batch_size"):
        StreamSettings(batch_size=0)
    with pytest.raises(ConfigError, match="unknown field.*batchsize"):
        stream("a.tar", batchsize=8)


def test_batch_plan_splits_a_budget_evenly_over_ranks():
    plan = BatchPlan.for_budget(samples=1000, batch_size=64, world_size=4)
    assert plan.steps == 4 and [plan.size(s) for s in range(4)] == [64, 64, 64, 58]
    assert sum(plan.size(s) for s in range(plan.steps)) * 4 == 1000
    with pytest.raises(ConfigError, match="split evenly"):
        BatchPlan.for_budget(samples=1001, batch_size=64, world_size=4)


def test_images_are_normalised_with_clip_statistics(tmp_path):
    write_shards(tmp_path, shards=1, per_shard=4)
    loader, _ = stream(str(tmp_path), train=False, batch_size=4, image_size=8, workers=0)
    images = next(iter(loader)).images
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    pixels = images * std + mean
    assert pixels.min() >= -1e-3 and pixels.max() <= 1 + 1e-3
    assert np.isclose(float(pixels.mean()), 0.5, atol=0.1)  # uniform random test pixels


@pytest.mark.parametrize("train", [False, True])
def test_batched_preprocessing_equals_open_clips_transform_exactly(train):
    import random

    from PIL import Image

    from nas.data.transforms import BatchPreprocess, image_transform

    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (40 + 3 * i, 50, 3), dtype=np.uint8))
              for i in range(4)]
    transform = image_transform(24, train, Augment.vitamin_long())
    torch.manual_seed(0)
    random.seed(0)
    expected = torch.stack([transform(image) for image in images])
    torch.manual_seed(0)
    random.seed(0)
    assert torch.equal(BatchPreprocess(transform)(images), expected)


def test_images_smaller_than_the_tower_are_upsampled_with_a_warning_once():
    from PIL import Image

    from nas.data.transforms import BatchPreprocess, image_transform

    small = [Image.new("RGB", (32, 32))] * 2
    preprocess = BatchPreprocess(image_transform(64, False), 64)
    with pytest.warns(UserWarning, match="images of 32x32 px are upsampled to the tower's 64 px input"):
        assert preprocess(small).shape == (2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preprocess(small)  # said once
        BatchPreprocess(image_transform(32, False), 32)(small)  # the tower's own size: nothing to say
