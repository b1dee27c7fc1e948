"""Data for proxy training and evaluation: DataComp shards, subsets, a synthetic dataset, eval sets.

Training stream (`nas.data.streaming`; its configs in `nas.data.source`)::

    source = nas.data.DataSource("data/shards", subset="keep.npy")       # which data (a study's `data:`)
    settings = nas.data.StreamSettings(batch_size=256, image_size=224, samples=1_000_000, workers=8, seed=0)
    loader, stats = nas.data.stream(source, settings)                    # how one run reads it
    loader, stats = nas.data.stream("data/shards", batch_size=256, ...)  # the same, as keywords
    run_stream = nas.data.connect(source, settings, rank=0, world_size=1)  # bound to one run (as the trainer does)
    loader = run_stream(start_sample)    # its loader, opened where the run stands; run_stream.stats follows it
    for images, texts, uids in loader:  # (B,3,H,W) float, (B,77) int64, list of uids; len(loader) batches
        ...
    print(stats.summary())              # samples_seen, skipped by reason (nas.data.SKIP_REASONS)

    Sources: a directory of .tar shards, a path or brace pattern (`shards/{00000000..00001287}.tar`),
    http(s) URLs, `pipe:` commands (s3: `pipe:aws s3 cp s3://bucket/00000000.tar -`), lists or `::`-joined.
    Subsets: `shards=K` with `shard_selection="first"|"random"`, `subset="uids.npy"|"uids.parquet"`
    (DataComp's uid allow-lists), `samples=N` (an exact budget of samples seen, over as many passes as it
    takes; `resample=True` draws shards with replacement). `start_sample` resumes a budgeted stream at a
    batch boundary exactly. Augmentation: `augment=Augment(...)` or "vitamin_long".

Subsets (`nas.data.subset`): `UidSet.load(path)`, `UidSet.save(path)`, and
`filter_metadata(metadata_dir, "clip_l14_similarity_score >= 0.3", top_fraction=None, by=None)`.

Synthetic captioned dataset (`nas.data.synth`): `synthesize(out, SynthConfig(samples=20_000, size=64,
seed=0))` writes `shards/` (+ `sizes.json`), `metadata/*.parquet`, `eval/zeroshot/` and `eval/retrieval/`
(`vitamin-nas data synth --out DIR` from a shell).

Evaluation sets (`nas.data.evalsets`): `zeroshot_set(path, image_size)` -> `ZeroShotSet(dataset,
classnames, templates)` for class-folder directories (ImageNet synset folders get open_clip's ImageNet
class names and templates) and the synthetic set; `retrieval_set(source, image_size)` -> `RetrievalSet`
(images, texts, text_to_image) from shards.

Attributes load on first use, so that `import nas.data` (and the CLI) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "stream": "streaming", "connect": "streaming", "RunStream": "streaming", "DataSource": "source",
    "StreamSettings": "source", "StreamStats": "streaming",
    "Loader": "streaming", "Batch": "streaming", "BatchPlan": "streaming", "SKIP_REASONS": "samples",
    "Augment": "source", "image_transform": "transforms", "tokenizer": "transforms",
    "UidSet": "subset", "filter_metadata": "subset",
    "expand_shards": "shards", "select_shards": "shards", "dataset_size": "shards",
    "synthesize": "synth", "SynthConfig": "synth",
    "zeroshot_set": "evalsets", "ZeroShotSet": "evalsets", "retrieval_set": "evalsets", "RetrievalSet": "evalsets",
}

__all__ = [
    "Augment",
    "Batch",
    "BatchPlan",
    "connect",
    "DataSource",
    "dataset_size",
    "expand_shards",
    "filter_metadata",
    "image_transform",
    "Loader",
    "retrieval_set",
    "RetrievalSet",
    "RunStream",
    "select_shards",
    "SKIP_REASONS",
    "stream",
    "StreamSettings",
    "StreamStats",
    "SynthConfig",
    "synthesize",
    "tokenizer",
    "UidSet",
    "zeroshot_set",
    "ZeroShotSet",
]

if TYPE_CHECKING:
    from nas.data.evalsets import RetrievalSet, ZeroShotSet, retrieval_set, zeroshot_set
    from nas.data.samples import SKIP_REASONS
    from nas.data.shards import dataset_size, expand_shards, select_shards
    from nas.data.source import Augment, DataSource, StreamSettings
    from nas.data.streaming import Batch, BatchPlan, Loader, RunStream, StreamStats, connect, stream
    from nas.data.subset import UidSet, filter_metadata
    from nas.data.synth import SynthConfig, synthesize
    from nas.data.transforms import image_transform, tokenizer


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nas.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"nas.data.{_EXPORTS[name]}"), name)
