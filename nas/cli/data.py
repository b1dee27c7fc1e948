"""`vitamin-nas data`: synthesize a dataset, write the handwritten digits, write a uid subset from metadata,
split metadata per shard, inspect shards.

    vitamin-nas data synth --out data/synth --samples 20000 --size 64
    vitamin-nas data subset --metadata metadata/ --where "clip_l14_similarity_score >= 0.3" --out keep.npy
    vitamin-nas data split --metadata recaptions.parquet --shards shards/ --captions "{caption}" --out captions/
    vitamin-nas data inspect data/synth/shards

Kept free of heavy imports at module level.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections import Counter
from pathlib import Path

from nas.data.limits import MAX_PIXELS, MIN_SIDE, ImageLimits
from nas.errors import ConfigError


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data",
                               help="datasets: synthesize, handwritten digits, subset and split metadata, inspect",
                               description="Make and check the image-text data that proxies train on.")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    _register_synth(sub)
    _register_digits(sub)
    _register_subset(sub)
    _register_split(sub)
    _register_inspect(sub)


def _register_synth(sub: argparse._SubParsersAction) -> None:
    synth = sub.add_parser(
        "synth", help="write a synthetic captioned dataset in DataComp's format",
        description="Write procedurally drawn scenes with captions that describe them (shape, colour, size, "
                    "position, count, texture) as DataComp-format shards with a metadata parquet, plus a "
                    "zero-shot classification set and a retrieval set. Deterministic for a seed; rerunning "
                    "into the same directory with the same settings keeps what is already written.")
    synth.add_argument("--out", required=True, help="output directory (new, or an earlier run's to resume)")
    synth.add_argument("--samples", type=int, default=20_000, help="training samples (default 20000)")
    synth.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--samples-per-shard", type=int, default=1000, help="samples per tar shard (default 1000)")
    synth.add_argument("--zeroshot-per-class", type=int, default=10,
                       help="zero-shot images per class, 80 classes (default 10; 0 for none)")
    synth.add_argument("--retrieval-samples", type=int, default=1000,
                       help="retrieval images, five captions each (default 1000; 0 for none)")
    synth.add_argument("--caption-noise", type=float, default=0.1,
                       help="fraction of training captions that do not describe their image (default 0.1)")
    synth.add_argument("--scenes", choices=("varied", "simple"), default="varied",
                       help="varied: counts, sizes, textures, second objects, textured backgrounds; simple: one solid "
                            "medium or large object on a plain background (default varied)")
    synth.add_argument("--workers", type=int, default=0, help="processes (default: one per CPU core)")
    synth.set_defaults(func=_synth)


def _register_digits(sub: argparse._SubParsersAction) -> None:
    digits = sub.add_parser(
        "digits", help="write scikit-learn's 1,797 handwritten digits as captioned shards and a zero-shot set",
        description="Write the handwritten digits that ship with scikit-learn (real images, nothing to download) "
                    "as DataComp-format shards captioned from several templates ('a handwritten digit seven', 'a "
                    "photo of the number 7', ...), with a metadata parquet, and hold out a fraction of every "
                    "class as a zero-shot set (class folders, class names, prompt templates). Deterministic for "
                    "a seed. Needs the digits extra: pip install 'vitamin-nas[digits]'. Example: vitamin-nas data "
                    "digits --out data/digits; then train with --data data/digits/shards --eval "
                    "data/digits/eval/zeroshot.")
    digits.add_argument("--out", required=True, help="output directory (new, or an earlier run's with the same "
                                                     "settings)")
    digits.add_argument("--size", type=int, default=32, help="image side in pixels, upscaled from 8 (default 32)")
    digits.add_argument("--held-out", type=float, default=0.3,
                        help="fraction of every class held out for the zero-shot set (default 0.3)")
    digits.add_argument("--seed", type=int, default=0, help="random seed: split, shard order, captions (default 0)")
    digits.add_argument("--samples-per-shard", type=int, default=500, help="samples per tar shard (default 500)")
    digits.set_defaults(func=_digits)


def _register_subset(sub: argparse._SubParsersAction) -> None:
    subset = sub.add_parser(
        "subset", help="write a uid list (.npy or .parquet) from a metadata filter",
        description="Select samples by their metadata, as DataComp's filtering baselines do, and write their "
                    "uids: .npy in DataComp's format (pairs of uint64, usable as --subset_file) or .parquet "
                    "with a uid column. Example: --where 'clip_l14_similarity_score >= 0.3'. Expressions allow "
                    "comparisons, and/or/not, 'col in [..]', column names and literals.")
    subset.add_argument("--metadata", required=True, help="a parquet file or a directory of them")
    subset.add_argument("--where", help="row filter, e.g. 'clip_l14_similarity_score >= 0.3 and original_width >= 64'")
    subset.add_argument("--top-fraction", type=float, help="then keep this fraction of rows with the highest --by")
    subset.add_argument("--by", help="score column for --top-fraction, e.g. clip_l14_similarity_score")
    subset.add_argument("--uid-column", default="uid", help="uid column name (default uid)")
    subset.add_argument("--out", required=True, help="output file: FILE.npy or FILE.parquet")
    subset.set_defaults(func=_subset)


def _register_split(sub: argparse._SubParsersAction) -> None:
    split = sub.add_parser(
        "split", help="write metadata one file per shard (<shard>.parquet), as a stream reads it",
        description="Join metadata of any layout (one table for the pool keyed by uid: DataComp's pool metadata, a "
                    "re-captioning) to the shards and write one parquet per shard, OUT/<shard>.parquet, with the "
                    "rows of that shard's samples: the layout a stream reads captions from (data.metadata), one "
                    "shard at a time, so that a loader's memory does not grow with the pool. One pass over the "
                    "shards' uids (their .json members) and one over the metadata in batches. Not needed for "
                    "DataComp's or img2dataset's download, which writes a parquet beside each tar already.")
    split.add_argument("--metadata", required=True, help="a parquet file or a directory of them")
    split.add_argument("--shards", required=True, help="the shards: directory, path, brace pattern, URL or pipe:")
    split.add_argument("--out", required=True, help="output directory (then give it as data.metadata)")
    split.add_argument("--captions", metavar="TEMPLATE",
                       help="keep the columns this caption template names, e.g. '{text}' (default: every column)")
    split.add_argument("--subset", help="keep only the rows of these uids (.npy or .parquet)")
    split.add_argument("--uid-column", default="uid", help="uid column name (default uid)")
    split.set_defaults(func=_split)


def _register_inspect(sub: argparse._SubParsersAction) -> None:
    inspect = sub.add_parser(
        "inspect", help="read shards once and report samples, skips by reason, sizes and example captions",
        description="Read every sample of the given shards (a directory, path, brace pattern, URL or pipe: "
                    "command), decode its image, and report what a training stream would see and skip.")
    inspect.add_argument("source", help="shards: directory, path or pattern such as 'shards/{00000000..00000009}.tar'")
    inspect.add_argument("--subset", help="uid list (.npy or .parquet) to apply, as a stream would")
    inspect.add_argument("--shards", type=int, help="read only the first K shards")
    inspect.add_argument("--examples", type=int, default=5, help="example captions to print (default 5)")
    inspect.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                         help=f"skip images above N pixels, from their header, as too_large (default {MAX_PIXELS:,}, "
                              "a study's data.max_pixels)")
    inspect.add_argument("--min-side", type=int, default=MIN_SIDE, metavar="PX",
                         help=f"skip images with a side below PX as too_small (default {MIN_SIDE}, a study's "
                              "data.min_side)")
    inspect.add_argument("--workers", type=int, default=0, help="processes (default: one per CPU core)")
    inspect.set_defaults(func=_inspect)


def _synth(args: argparse.Namespace) -> int:
    from nas.data.synth import SynthConfig, synthesize

    config = SynthConfig(samples=args.samples, size=args.size, seed=args.seed, samples_per_shard=args.samples_per_shard,
                         zeroshot_per_class=args.zeroshot_per_class, retrieval_samples=args.retrieval_samples,
                         caption_noise=args.caption_noise, scenes=args.scenes, workers=args.workers)
    record = synthesize(args.out, config, progress=True)
    out = Path(args.out)
    print(f"wrote {record['train_samples']} samples in {record['train_shards']} shards to {out / 'shards'}")
    print(f"metadata: {out / 'metadata'}")
    if record["zeroshot_images"]:
        print(f"zero-shot set: {out / 'eval' / 'zeroshot'} ({record['zeroshot_classes']} classes, "
              f"{record['zeroshot_images']} images)")
    if record["retrieval_samples"]:
        print(f"retrieval set: {out / 'eval' / 'retrieval'} ({record['retrieval_samples']} images)")
    return 0


def _digits(args: argparse.Namespace) -> int:
    from nas.data.digits import write_digits

    record = write_digits(args.out, size=args.size, seed=args.seed, held_out=args.held_out,
                          samples_per_shard=args.samples_per_shard)
    out = Path(args.out)
    print(f"wrote {record['train_samples']} digits in {record['train_shards']} shards to {out / 'shards'}")
    print(f"metadata: {out / 'metadata'}")
    print(f"zero-shot set: {out / 'eval' / 'zeroshot'} ({record['zeroshot_classes']} classes, "
          f"{record['zeroshot_images']} images)")
    return 0


def _subset(args: argparse.Namespace) -> int:
    from nas.data.subset import filter_metadata

    if not args.out.endswith((".npy", ".parquet")):
        raise ConfigError("must end in .npy or .parquet", source=args.out, field="--out")
    uids = filter_metadata(args.metadata, args.where, top_fraction=args.top_fraction, by=args.by,
                           uid_column=args.uid_column, progress=True)
    uids.save(args.out)
    print(f"wrote {len(uids)} uids to {args.out}")
    return 0


def _split(args: argparse.Namespace) -> int:
    from nas.data.shard_metadata import split_metadata
    from nas.data.shards import expand_shards
    from nas.data.subset import UidSet, caption_fields

    columns = None
    if args.captions is not None:
        columns = caption_fields(args.captions)
        if not columns:
            raise ConfigError(f"a template over metadata columns, e.g. '{{text}}'; got {args.captions!r}",
                              field="--captions")
    record = split_metadata(args.metadata, expand_shards(args.shards), args.out, columns,
                            subset=UidSet.load(args.subset) if args.subset else None, uid_column=args.uid_column,
                            progress=True)
    print(f"wrote {record['rows']} rows for {record['shard_samples']} samples of {record['shards']} shards to "
          f"{args.out} (columns: {', '.join(record['columns'])})")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from multiprocessing import get_context

    from tqdm import tqdm

    from nas.data.shards import expand_shards, select_shards

    urls = select_shards(expand_shards(args.source), args.shards)
    subset = args.subset
    if subset is not None and not os.path.exists(subset):
        raise ConfigError("uid list not found", source=subset)
    for name, value in (("--max-pixels", args.max_pixels), ("--min-side", args.min_side)):
        if value < 1:
            raise ConfigError(f"must be at least 1, got {value}", field=name)
    limits = ImageLimits(args.max_pixels, args.min_side)
    workers = args.workers or min(len(urls), os.cpu_count() or 1)
    tasks = [(url, subset, args.examples, limits) for url in urls]
    summaries = []
    with tqdm(total=len(urls), desc="reading shards", unit="shard") as bar:
        if workers > 1:
            with get_context("fork").Pool(workers) as pool:
                for summary in pool.imap(_inspect_shard, tasks):
                    summaries.append(summary)
                    bar.update()
        else:
            for task in tasks:
                summaries.append(_inspect_shard(task))
                bar.update()
    print(_report(urls, summaries, args.examples))
    return 0


def _inspect_shard(task: tuple[str, str | None, int, ImageLimits]) -> dict:
    """What one shard holds: readable samples, skips by reason, image sizes, caption lengths, examples."""
    from nas.data.samples import decoded, read_shard
    from nas.data.subset import UidSet

    url, subset, examples, limits = task
    uids = UidSet.load(subset) if subset else None
    skipped: Counter = Counter()
    summary = {"samples": 0, "filtered": 0, "sides": [], "words": [], "examples": []}
    for sample, image in decoded(read_shard(url, skipped), skipped, limits):
        if uids is not None and sample.uid not in uids:
            summary["filtered"] += 1
            continue
        summary["samples"] += 1
        summary["sides"].append(min(image.size))
        summary["words"].append(len(sample.caption.split()))
        if len(summary["examples"]) < examples:
            summary["examples"].append(sample.caption)
    summary["skipped"] = skipped
    return summary


def _report(urls: list[str], summaries: list[dict], examples: int) -> str:
    skipped: Counter = sum((s["skipped"] for s in summaries), Counter())
    samples = sum(s["samples"] for s in summaries)
    filtered = sum(s["filtered"] for s in summaries)
    sides = [v for s in summaries for v in s["sides"]]
    words = [v for s in summaries for v in s["words"]]
    lines = [f"shards: {len(urls)}", f"samples: {samples}"]
    if filtered:
        lines.append(f"not in subset: {filtered}")
    lines.append("skipped: " + (", ".join(f"{r}={n}" for r, n in sorted(skipped.items())) or "none"))
    if sides:
        lines.append(f"image shorter side: min {min(sides)}, median {statistics.median(sides):g}, max {max(sides)}")
        lines.append(f"caption words: min {min(words)}, median {statistics.median(words):g}, max {max(words)}")
    shown = [c for s in summaries for c in s["examples"]][:examples]
    lines.extend(["examples:"] + [f"  {c}" for c in shown] if shown else [])
    return "\n".join(lines)
