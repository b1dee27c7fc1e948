"""The training stream: DataComp-format shards in, (images, texts) batches for one rank out.

    loader, stats = stream("shards/{00000000..00001287}.tar", batch_size=256, image_size=224,
                           samples=12_800_000, workers=8)
    for images, texts, uids in loader:     # exactly 12.8M samples over all ranks, then it stops
        ...
    print(stats.summary())                 # samples seen, and what was skipped, by reason

Semantics, with R ranks and W loader workers (R*W "slots"):

- Budget (`samples=N`): every rank draws the same number of batches, `len(loader)`, and the ranks together
  see exactly N samples (the last batch of each rank is smaller when N is not a multiple of the global
  batch). The stream runs as many passes over the shards as that takes; one pass is one epoch, counted in
  samples and never multiplied by W. Without a budget (`samples=None`) the loader makes one pass, and
  ranks may then draw different numbers of batches: train distributed with a budget.
- Each sample appears at most once per pass (unless `resample=True`, which draws shards with
  replacement as open_clip's `--dataset-resampled` does). Shards are dealt out to slots; when there are
  fewer shards than slots, every slot reads every shard and keeps every (R*W)-th sample, so no worker or
  rank is left without data and none waits for ever.
- Order is reproducible: shard order, the sample shuffle buffer and every random augmentation derive from
  `seed` (and the rank, worker count and batch index), never from time or process ids. The same seed,
  R and W give the same batches, and `start_sample=k` resumes a budgeted stream at batch boundary k
  with exactly the batches an uninterrupted run would have drawn next.
- Broken input is skipped and counted (`nas.data.samples.SKIP_REASONS`), per rank, in `stats`; a local
  path that does not exist, or shards in which not a single sample can be read, fail at once with a
  `ConfigError`.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import math
import os
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.filters import shuffle as shuffle_stage

from nas.data.limits import ImageLimits
from nas.data.samples import RawSample, decode_or_count, decoded, read_shard
from nas.data.shard_metadata import ShardCaptions, ShardSubset
from nas.data.shards import dataset_size, expand_shards, select_shards
from nas.data.source import SETTINGS_FIELDS, SOURCE_FIELDS, DataSource, StreamSettings
from nas.data.subset import UidSet
from nas.data.transforms import BatchPreprocess, image_transform, tokenizer
from nas.errors import ConfigError, reject_unknown

FILTERED = "not_in_subset"
"""Counted apart from the skip reasons: a sample outside the uid allow-list is selection, not failure."""


class Batch(NamedTuple):
    """One rank's batch: normalised images (B, 3, H, W), token ids (B, context_length), sample uids."""

    images: torch.Tensor
    texts: torch.Tensor
    uids: list[str]


@dataclass
class StreamStats:
    """What one rank's loader delivered and skipped. Updated as batches arrive in the main process."""

    samples_seen: int = 0
    batches: int = 0
    skipped: Counter = field(default_factory=Counter)
    filtered: int = 0
    dataset_samples: int | None = None

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def absorb(self, counts: Mapping[str, int]) -> None:
        for reason, count in counts.items():
            if reason == FILTERED:
                self.filtered += count
            else:
                self.skipped[reason] += count

    def summary(self) -> str:
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(self.skipped.items())) or "none"
        text = f"samples_seen={self.samples_seen} batches={self.batches} skipped: {reasons}"
        return text + (f"; not in subset: {self.filtered}" if self.filtered else "")


@dataclass(frozen=True)
class BatchPlan:
    """How many batches each rank draws and how large they are: the same on every rank, so none waits."""

    steps: int
    batch_size: int
    last_size: int

    @classmethod
    def for_budget(cls, samples: int, batch_size: int, world_size: int) -> BatchPlan:
        if samples % world_size:
            raise ConfigError(f"{samples} samples do not split evenly over {world_size} ranks", field="samples")
        per_rank = samples // world_size
        steps = math.ceil(per_rank / batch_size)
        return cls(steps=steps, batch_size=batch_size, last_size=per_rank - (steps - 1) * batch_size)

    def size(self, step: int) -> int:
        return self.last_size if step == self.steps - 1 else self.batch_size

    @property
    def per_rank(self) -> int:
        return (self.steps - 1) * self.batch_size + self.last_size

    def first_step(self, start_sample: int, world_size: int) -> int:
        """The step a run resumed at `start_sample` (a batch boundary, or the end) draws first."""
        if start_sample >= self.per_rank * world_size:
            return self.steps
        return start_sample // (self.batch_size * world_size)


@dataclass(frozen=True)
class _Slot:
    """One (rank, worker) reader: `index` in `[0, count)` with `count = world_size * workers`."""

    index: int
    count: int


def _seed(*parts: object) -> int:
    """A 63-bit seed from named parts; unlike `hash()`, the same in every process and Python run."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big") >> 1


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's and Python's global generators (torchvision draws from the one, open_clip's jitter and
    grayscale from the other) for one batch, and leave both as they were for whoever else uses them."""
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)


class _Guard:
    """Stops a budgeted stream that would otherwise spin for ever on input in which nothing is usable.

    Limits are far beyond what healthy data can produce (every shard empty or filtered out for several
    passes in a row, or ten thousand undecodable images in a row), so they only end hopeless runs.
    """

    def __init__(self, shard_limit: int | None, decode_limit: int | None):
        self.shard_limit = shard_limit
        self.decode_limit = decode_limit
        self.empty_shards = 0
        self.failed_decodes = 0

    def shard_read(self, url: str, produced: bool, counts: Counter) -> None:
        self.empty_shards = 0 if produced else self.empty_shards + 1
        if self.shard_limit is not None and self.empty_shards > self.shard_limit:
            raise RuntimeError(f"{self.empty_shards} shards in a row held no usable sample (last: {url}); "
                               f"skipped so far: {dict(counts)}")

    def decode(self, ok: bool, counts: Counter) -> None:
        self.failed_decodes = 0 if ok else self.failed_decodes + 1
        if self.decode_limit is not None and self.failed_decodes > self.decode_limit:
            raise RuntimeError(f"{self.failed_decodes} images in a row did not decode; skipped so far: "
                               f"{dict(counts)}")


class ShardStream(IterableDataset):
    """One rank's stream. Each DataLoader worker yields its own batches plus a final count of skips."""

    def __init__(self, source: DataSource, settings: StreamSettings, urls: Sequence[str], rank: int,
                 world_size: int, uids: UidSet | ShardSubset | None, captions: ShardCaptions | None = None):
        super().__init__()
        self.source = source
        self.settings = settings
        self.urls = list(urls)
        self.rank = rank
        self.world_size = world_size
        self.uids = uids
        self.captions = captions
        self.plan = BatchPlan.for_budget(settings.samples, settings.batch_size, world_size) if settings.samples \
            else None
        self.first_step = self.plan.first_step(settings.start_sample, world_size) if self.plan else 0
        self.preprocess = BatchPreprocess(image_transform(settings.image_size, settings.train, source.augment),
                                          settings.image_size)
        self.tokenize = tokenizer(source.tokenizer, settings.context_length)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers = info.num_workers if info is not None else 1
        # The DataLoader asks its worker 0 first; after a resume the first batch due is step `first_step`,
        # which belongs to worker `first_step % W`, so loader workers take the stream workers' parts in turn.
        worker = ((info.id if info is not None else 0) + self.first_step) % workers
        slot = _Slot(self.rank * workers + worker, self.world_size * workers)
        counts: Counter = Counter()
        guard = _Guard(4 * max(len(self.urls), slot.count) + 16, 10_000) if self.plan else _Guard(None, None)
        raw = self._resampled(slot, counts, guard) if self.source.resample else self._passes(slot, counts, guard)
        images = self._decoded(raw, counts, guard)
        if self.plan:
            batches = self._budget_batches(images, worker, workers, counts)
        else:
            batches = self._pass_batches(images, slot)
        for batch_seed, pairs in batches:
            yield self._collate(pairs, batch_seed, counts)
        yield {"final": True, "counts": self._drain(counts)}

    def _resampled(self, slot: _Slot, counts: Counter, guard: _Guard) -> Iterator[RawSample]:
        """Shards drawn with replacement, from a stream of draws of this slot's own, shuffled as one stream."""
        rng = random.Random(_seed(self.settings.seed, "resample", slot.index, slot.count))

        def draws() -> Iterator[RawSample]:
            while True:
                yield from self._allowed(rng.choice(self.urls), counts, guard)

        return self._shuffled(draws(), _seed(self.settings.seed, "samples", slot.index, slot.count, "resample"))

    def _passes(self, slot: _Slot, counts: Counter, guard: _Guard) -> Iterator[RawSample]:
        """This slot's share of each pass (of one pass without a budget), shuffled within the pass only, so
        that no sample can appear twice in a pass however small the data is next to the shuffle buffer."""
        positions = itertools.count()
        for pass_index in itertools.count() if self.plan else [0]:
            samples = self._one_pass(slot, pass_index, counts, guard, positions)
            yield from self._shuffled(samples, _seed(self.settings.seed, "samples", slot.index, slot.count, pass_index))

    def _one_pass(self, slot: _Slot, pass_index: int, counts: Counter, guard: _Guard,
                  positions: Iterator[int]) -> Iterator[RawSample]:
        order = self._shard_order(pass_index)
        if len(order) >= slot.count:
            for url in order[slot.index :: slot.count]:
                yield from self._allowed(url, counts, guard)
            return
        for url in order:  # fewer shards than slots: all read everything, each keeps its residue
            for sample in self._allowed(url, counts, guard):
                if next(positions) % slot.count == slot.index:
                    yield sample

    def _shard_order(self, pass_index: int) -> list[str]:
        order = list(self.urls)
        if self.settings.train:
            random.Random(_seed(self.settings.seed, "shards", pass_index)).shuffle(order)
        return order

    def _allowed(self, url: str, counts: Counter, guard: _Guard) -> Iterator[RawSample]:
        produced = False
        captions = self.captions.for_shard(url) if self.captions is not None else None  # this shard's rows only
        allowed = self.uids.for_shard(url) if isinstance(self.uids, ShardSubset) else self.uids
        for sample in read_shard(url, counts, self.source.timeout):
            if allowed is not None and sample.uid not in allowed:
                counts[FILTERED] += 1
            elif captions is not None and sample.uid not in captions:
                counts["no_metadata_row"] += 1
            else:
                produced = True
                yield sample if captions is None else replace(sample, caption=captions[sample.uid])
        guard.shard_read(url, produced, counts)

    def _decoded(self, samples: Iterator[RawSample], counts: Counter, guard: _Guard) -> Iterator[tuple]:
        limits = self.source.limits
        for sample in samples:
            image = decode_or_count(sample, counts, limits)
            guard.decode(image is not None, counts)
            if image is not None:
                yield sample, image

    def _shuffled(self, samples: Iterator[RawSample], seed: int) -> Iterator[RawSample]:
        """Shuffle encoded samples in a seeded buffer (cheap: nothing is decoded yet)."""
        if not self.settings.train:
            return samples
        size = self.source.shuffle_buffer
        return shuffle_stage(size, min(size, 1000), seed=seed)(samples)

    def _budget_batches(self, images: Iterator, worker: int, workers: int,
                        counts: Counter) -> Iterator[tuple[int, list]]:
        """Worker w draws the rank's batches w, w+W, ...: the DataLoader's round-robin order, exactly.

        Resuming replays the batches before `start_sample` (decoding, since an image that does not decode
        changes which samples fill a batch, but not transforming) and forgets their skips, which the
        interrupted run reported already.
        """
        for step in range(worker, self.plan.steps, workers):
            if step < self.first_step:
                collections.deque(itertools.islice(images, self.plan.size(step)), maxlen=0)
                continue
            if step - workers < self.first_step:
                counts.clear()
            pairs = list(itertools.islice(images, self.plan.size(step)))
            yield _seed(self.settings.seed, "augment", self.rank, step), pairs

    def _pass_batches(self, images: Iterator, slot: _Slot) -> Iterator[tuple[int, list]]:
        for number in itertools.count():
            pairs = list(itertools.islice(images, self.settings.batch_size))
            if not pairs:
                return
            yield _seed(self.settings.seed, "augment", slot.index, slot.count, number), pairs

    def _collate(self, pairs: list, batch_seed: int, counts: Counter) -> dict:
        with _seeded(batch_seed):
            images = self.preprocess([image for _, image in pairs])
        texts = self.tokenize([sample.caption for sample, _ in pairs])
        return {"final": False, "images": images, "texts": texts, "uids": [sample.uid for sample, _ in pairs],
                "counts": self._drain(counts)}

    @staticmethod
    def _drain(counts: Counter) -> dict[str, int]:
        """The counts since the last batch, so that each reaches the main process exactly once."""
        delta = dict(counts)
        counts.clear()
        return delta


class Loader:
    """Iterable of `Batch`es for one rank, over DataLoader workers; `stats` fills in as it runs."""

    def __init__(self, dataset: ShardStream, stats: StreamStats):
        self.dataset = dataset
        self.settings = dataset.settings
        self.stats = stats

    def __len__(self) -> int:
        """Batches per rank in a budgeted stream (from `start_sample` on); a single pass has no fixed length."""
        if self.dataset.plan is None:
            raise TypeError("a single-pass stream has no fixed length; give a budget (samples) for one")
        return self.dataset.plan.steps - self.dataset.first_step

    def __iter__(self) -> Iterator[Batch]:
        items = iter(DataLoader(self.dataset, batch_size=None, num_workers=self.settings.workers,
                                pin_memory=self.settings.pin_memory))
        try:
            for item in items:
                self.stats.absorb(item["counts"])
                if item["final"]:
                    continue
                self.stats.samples_seen += len(item["uids"])
                self.stats.batches += 1
                yield Batch(item["images"], item["texts"], item["uids"])
        finally:
            # Stop the workers now: left to garbage collection (an abandoned loop, or an error whose traceback
            # holds the iterator) torch's shutdown waits out a 5 s join timeout per worker. Private, but the
            # method every DataLoader iterator with workers has had since torch 1.0.
            shutdown = getattr(items, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()


def stream(source: str | Sequence[str] | DataSource, settings: StreamSettings | None = None, *,
           rank: int | None = None, world_size: int | None = None, **options: Any) -> tuple[Loader, StreamStats]:
    """A loader for this rank and its stats: `stream(source, settings)`, or `stream(urls, batch_size=..., ...)`
    with the fields of `DataSource` and `StreamSettings` as keywords.

    `rank` and `world_size` default to torch.distributed's when it is initialised, else 0 and 1. Checks the
    source before any worker starts: paths exist, the subset file loads, a first sample decodes.
    """
    reject_unknown(options, SOURCE_FIELDS | SETTINGS_FIELDS)
    if not isinstance(source, DataSource):
        source = DataSource(urls=source)
    source = replace(source, **{k: v for k, v in options.items() if k in SOURCE_FIELDS})
    settings = replace(settings or StreamSettings(), **{k: v for k, v in options.items() if k in SETTINGS_FIELDS})
    rank, world_size = _rank_and_world(rank, world_size)
    urls = select_shards(expand_shards(source.urls), source.shards, source.shard_selection, settings.seed)
    uids = (ShardSubset(source.subset, urls) if os.path.isdir(source.subset) else UidSet.load(source.subset)) \
        if source.subset else None
    captions = ShardCaptions(source.metadata, source.captions, urls) if source.captions else None
    _check_start(settings, world_size)
    _preflight(urls, uids if isinstance(uids, UidSet) else None, source.limits, source.timeout)
    if source.resample and settings.samples is None:
        raise ConfigError("resampling never ends a pass, so it needs a budget (samples)", field="resample")
    stats = StreamStats(dataset_samples=dataset_size(urls))
    return Loader(ShardStream(source, settings, urls, rank, world_size, uids, captions), stats), stats


@dataclass
class RunStream:
    """A `DataSource` connected to one run (`connect`): its `StreamSettings` and its rank among `world_size`.

    `run_stream(start_sample)` opens the run's loader at `start_sample` (0, or where a resumed run stands: a batch
    boundary); `stats` follows the skips of the loader opened last (None before the first)."""

    source: DataSource
    settings: StreamSettings
    rank: int
    world_size: int
    stats: StreamStats | None = None

    def __call__(self, start_sample: int = 0) -> Loader:
        loader, self.stats = stream(self.source, replace(self.settings, start_sample=start_sample), rank=self.rank,
                                    world_size=self.world_size)
        return loader


def connect(source: DataSource, settings: StreamSettings, *, rank: int | None = None,
            world_size: int | None = None) -> RunStream:
    """Connect a study's `DataSource` to one run (litgpt's `DataModule.connect`): the run supplies what must agree
    with its model, budget and ranks (`settings`: batch size per rank, resolution, budget, seed, workers, context
    length, pinned memory) and its place among the ranks (`rank`, `world_size`: torch.distributed's when it is
    initialised, else 0 and 1). The trainer connects its data this way (`nas.train.loop`)."""
    rank, world_size = _rank_and_world(rank, world_size)
    return RunStream(source, settings, rank, world_size)


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if rank is None:
        rank = torch.distributed.get_rank() if distributed else 0
    if world_size is None:
        world_size = torch.distributed.get_world_size() if distributed else 1
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in [0, {world_size})", field="rank")
    return rank, world_size


def _check_start(settings: StreamSettings, world_size: int) -> None:
    step = settings.batch_size * world_size
    if settings.start_sample and settings.start_sample != settings.samples and settings.start_sample % step:
        raise ConfigError(f"resume at a batch boundary: {settings.start_sample} is not a multiple of the global "
                          f"batch {step}", field="start_sample")
    if settings.samples is not None and settings.start_sample > settings.samples:
        raise ConfigError(f"{settings.start_sample} is past the budget of {settings.samples}", field="start_sample")


def _preflight(urls: Sequence[str], uids: UidSet | None, limits: ImageLimits, timeout: float,
               attempts: int = 8) -> None:
    """Fail now, with the reasons, if the first shards hold no readable sample or the uids cannot match."""
    counts: Counter = Counter()
    for url in urls[:attempts]:
        for sample, _ in decoded(read_shard(url, counts, timeout), counts, limits):
            if uids is not None and uids.is_hex and not _is_hex_uid(sample.uid):
                raise ConfigError(f"the subset holds DataComp hex uids but samples carry uids like {sample.uid!r}",
                                  field="subset")
            return
    tried = min(len(urls), attempts)
    raise ConfigError(f"no readable sample in the first {tried} shard(s); skipped: {dict(counts)}", source=urls[0])


def _is_hex_uid(uid: str) -> bool:
    return len(uid) == 32 and all(c in "0123456789abcdefABCDEF" for c in uid)
