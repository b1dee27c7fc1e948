"""`vitamin-nas train`: proxy-train one candidate for a budget of samples seen, evaluate it, export it.

    vitamin-nas train --arch ViTamin-S --data shards/ --samples 12800000 --batch-size 8192 \\
        --eval eval/zeroshot --retrieval eval/retrieval --rungs 1280000,6400000 --out runs/vitamin-s

Writes under `--out`: `config.json` (what produced the run), `metrics.jsonl` (a "train" line every
`--log-every` steps with loss and images/s, a "rung" line per rung with the evaluation), `checkpoint.pt`
(the latest; rerunning the same command resumes from it) and `open_clip/` (see `nas.export`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nas.errors import ConfigError
from nas.presets import TextTower, preset_with_text


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train", help="proxy-train one candidate for a budget of samples seen, evaluate and export it",
        description="Train a candidate CLIP model (OpenCLIP recipe: AdamW 0.9/0.98, eps 1e-6, wd 0.2, cosine "
                    "with warmup, InfoNCE, drop-path 0.1 in the Transformer stage; bf16 on GPU) on DataComp-format "
                    "shards, evaluate it at each rung, and export it for open_clip. Rerun the same command to "
                    "resume a killed run. Under torchrun it trains data-parallel.",
)
    what = parser.add_argument_group("what to train")
    what.add_argument("--arch", required=True, help="preset name (vitamin-nas arch --list) or FILE.json (Arch)")
    what.add_argument("--text", help="text tower: a preset name (its text tower) or FILE.json of TextTower fields; "
                                     "default: the preset's, or open_clip's 12x512 for an arch file")
    what.add_argument("--data", required=True, help="training shards: directory, brace pattern, URL or pipe:")
    what.add_argument("--samples", type=int, required=True, help="budget: samples seen over all ranks")
    what.add_argument("--eval", help="zero-shot set: a class-folder directory, or a synthetic eval/ directory "
                                     "(its zeroshot/ and retrieval/ are both used)")
    what.add_argument("--retrieval", help="retrieval set: shards of held-out image-caption pairs")
    what.add_argument("--captions", metavar="TEMPLATE",
                      help="caption each sample from its metadata row instead of its .txt, e.g. '{color} {shape}' "
                           "(needs --metadata)")
    what.add_argument("--metadata", help="the metadata parquet (file or directory) with a uid column, for --captions")
    what.add_argument("--out", help="run directory (default: runs/<arch_id>)")
    recipe = parser.add_argument_group("recipe")
    recipe.add_argument("--batch-size", type=int, default=256,
                        help="global batch, the contrastive batch (default: %(default)s)")
    recipe.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default: %(default)s)")
    recipe.add_argument("--warmup", type=int, default=500, help="linear warmup steps (default: %(default)s)")
    recipe.add_argument("--weight-decay", type=float, default=0.2, help="AdamW's (default: %(default)s)")
    recipe.add_argument("--loss", choices=("clip", "siglip"), default="clip", help="(default: %(default)s)")
    recipe.add_argument("--drop-path", type=float, default=0.1,
                        help="stochastic depth of the Transformer stage (default: %(default)s)")
    recipe.add_argument("--grad-clip-norm", type=float, help="clip the gradient norm (default: no clipping)")
    recipe.add_argument("--lock-text", metavar="CHECKPOINT",
                        help="LTT: load the text tower from this checkpoint or export and freeze it")
    recipe.add_argument("--seed", type=int, default=0, help="model init, data order, augmentation (default: 0)")
    engine = parser.add_argument_group("engineering")
    engine.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="auto: bf16 autocast on GPU, fp32 on CPU")
    engine.add_argument("--compile", action="store_true", help="torch.compile (falls back to eager on failure)")
    engine.add_argument("--grad-checkpointing", action="store_true", help="recompute activations in backward")
    engine.add_argument("--accum-freq", type=int, default=1,
                        help="micro-batches per step, gradient accumulation (default: %(default)s)")
    engine.add_argument("--rungs", default="", help="comma-separated samples-seen thresholds to evaluate at")
    engine.add_argument("--checkpoint-every", type=int, help="samples between checkpoints (default: 10 per run)")
    engine.add_argument("--log-every", type=int, default=10, help="steps between metrics lines (default: %(default)s)")
    engine.add_argument("--workers", type=int, default=4, help="data loader workers per rank (default: %(default)s)")
    engine.add_argument("--augment", default="default",
                        help="'default' (RandomResizedCrop 0.9-1) or 'vitamin_long' (0.4-1, colour jitter, grayscale)")
    engine.add_argument("--eval-batch-size", type=int, default=256, help="(default: %(default)s)")
    engine.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_train)


def _text_tower(spec: str | None, default: TextTower) -> TextTower:
    if spec is None:
        return default
    if not spec.endswith(".json"):
        return preset_with_text(spec)[1]
    path = Path(spec)
    if not path.is_file():
        raise ConfigError("no such file", source=spec)
    try:
        return TextTower(**json.loads(path.read_text()))
    except (TypeError, json.JSONDecodeError) as err:
        raise ConfigError(f"not a text tower: {err}", source=spec) from None


def _rungs(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"must be comma-separated integers, got {text!r}", field="--rungs") from None


def _eval_sets(args: argparse.Namespace, image_size: int) -> tuple:
    from nas.data import retrieval_set, zeroshot_set

    zeroshot_path, retrieval_path = args.eval, args.retrieval
    if zeroshot_path and (Path(zeroshot_path) / "zeroshot").is_dir():
        root = Path(zeroshot_path)
        zeroshot_path = str(root / "zeroshot")
        if retrieval_path is None and (root / "retrieval").is_dir():
            retrieval_path = str(root / "retrieval")
    zeroshot = zeroshot_set(zeroshot_path, image_size) if zeroshot_path else None
    retrieval = retrieval_set(retrieval_path, image_size) if retrieval_path else None
    return zeroshot, retrieval


def _train(args: argparse.Namespace) -> int:
    from nas import status
    from nas.data import DataSource
    from nas.export import export_checkpoint
    from nas.presets import load_arch
    from nas.train import OOMError, TrainConfig, train

    arch, default_text = load_arch(args.arch)
    text = _text_tower(args.text, default_text)
    config = TrainConfig(
        samples=args.samples, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
        weight_decay=args.weight_decay, loss=args.loss, drop_path=args.drop_path, precision=args.precision,
        compile=args.compile, grad_checkpointing=args.grad_checkpointing, accum_freq=args.accum_freq,
        grad_clip_norm=args.grad_clip_norm, lock_text=args.lock_text, rungs=_rungs(args.rungs),
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, eval_batch_size=args.eval_batch_size,
        workers=args.workers, seed=args.seed)
    data = DataSource(urls=args.data, augment=args.augment, captions=args.captions, metadata=args.metadata)
    zeroshot, retrieval = _eval_sets(args, arch.image_size)
    out = Path(args.out or f"runs/{arch.arch_id}")
    try:
        result = train(arch, text, data, config, out=out, zeroshot=zeroshot, retrieval=retrieval,
                       progress=not args.no_progress)
    except OOMError as err:
        print(f"vitamin-nas train: {err}; try a smaller --batch-size, --accum-freq or --grad-checkpointing",
              file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports and exports
        return 0
    if result.status == status.DIVERGED:
        print(f"vitamin-nas train: the loss diverged at {result.samples_seen} samples (step {result.step}); "
              f"try a lower --lr or a longer --warmup", file=sys.stderr)
        return 1
    export = export_checkpoint(result.checkpoint, out / "open_clip")
    summary = {"status": result.status, "arch": arch.name(), "arch_id": arch.arch_id, **result.final,
               "compile": result.compile, "skipped": result.data.get("skipped", {}), "export": str(export)}
    print(json.dumps(summary))
    return 0
