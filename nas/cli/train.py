"""`vitamin-nas train`: proxy-train one candidate for a budget of samples seen, evaluate it, export it.

    vitamin-nas train --arch ViTamin-S --data shards/ --samples 12800000 --batch-size 8192 \\
        --eval eval/zeroshot --retrieval eval/retrieval --rungs 1280000,6400000 --out runs/vitamin-s

Writes under `--out`: `config.json` (what produced the run), `metrics.jsonl` (a "train" line every
`--log-every` steps with loss and images/s, a "rung" line per rung with the evaluation), `checkpoint.pt`
(the latest; rerunning the same command resumes from it), `tensorboard/` (the curves by samples seen, with
`--report-to tensorboard`, the default) and `open_clip/` (see `nas.export`). Prints a line per rung and a table
at the end (`--json`: one JSON line instead). open_clip_train's option names are aliases of this command's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nas.errors import ConfigError
from nas.presets import TextTower, preset_with_text

#: Data loader workers per rank by default, unless the machine has fewer CPUs (torch warns past them).
LOADER_WORKERS = 4

#: open_clip_train's --precision names this trainer has: automatic mixed precision in bf16 is its `bf16`.
PRECISIONS = {"auto": "auto", "bf16": "bf16", "fp32": "fp32", "amp_bf16": "bf16", "amp_bfloat16": "bf16"}


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train", help="proxy-train one candidate for a budget of samples seen, evaluate and export it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a candidate CLIP model (OpenCLIP recipe: AdamW 0.9/0.98, eps 1e-6, wd 0.2, cosine "
                    "with warmup, InfoNCE, drop-path 0.1 in the Transformer stage; bf16 on GPU) on DataComp-format "
                    "shards, evaluate it at each rung, and export it for open_clip. Rerun the same command to "
                    "resume a killed run. Under torchrun it trains data-parallel. open_clip_train's option names "
                    "work too (--model, --train-data, --train-num-samples, --wd, --precision amp_bf16, "
                    "--imagenet-val, --siglip, --report-to, ...), with one difference: --batch-size is the global "
                    "batch over all GPUs, not open_clip_train's per-GPU one.",
        epilog="examples:\n"
               "  vitamin-nas train --arch ViTamin-S --data shards/ --samples 12800000 --batch-size 8192 \\\n"
               "      --eval eval/zeroshot --rungs 1280000,6400000 --out runs/vitamin-s\n"
               "  vitamin-nas train --model ViTamin-S --train-data 'shards/{00000000..00001287}.tar' \\\n"
               "      --train-num-samples 12800000 --subset keep.npy --batch-size 8192 --lr 1e-3 --wd 0.2 \\\n"
               "      --warmup 500 --precision amp_bf16 --imagenet-val imagenet/val --report-to tensorboard,wandb")
    what = parser.add_argument_group("what to train")
    what.add_argument("--arch", "--model", dest="arch", required=True,
                      help="preset name (vitamin-nas arch --list) or an arch FILE.json (any the CLI writes)")
    what.add_argument("--text", help="text tower: a preset name (its text tower) or FILE.json of TextTower fields; "
                                     "default: the arch file's or preset's, else open_clip's 12x512")
    what.add_argument("--data", "--train-data", dest="data", required=True,
                      help="training shards: directory, brace pattern, URL or pipe:")
    what.add_argument("--subset", metavar="FILE.npy",
                      help="train only on these uids: DataComp's .npy (`vitamin-nas data subset`), or a .parquet "
                           "with a uid column")
    what.add_argument("--samples", "--train-num-samples", dest="samples", type=int, required=True,
                      help="budget: samples seen over all ranks (per epoch with --epochs)")
    what.add_argument("--epochs", type=int, default=1, help="the budget is --samples x --epochs (default 1)")
    what.add_argument("--eval", "--imagenet-val", dest="eval",
                      help="zero-shot set: a class-folder directory (ImageNet's val/ synset folders get its class "
                           "names and templates), or a synthetic eval/ directory (its zeroshot/ and retrieval/)")
    what.add_argument("--retrieval", help="retrieval set: shards of held-out image-caption pairs")
    what.add_argument("--captions", metavar="TEMPLATE",
                      help="caption each sample from its metadata row instead of its .txt, e.g. '{color} {shape}' "
                           "(needs --metadata)")
    what.add_argument("--metadata", help="the metadata parquet (file or directory) with a uid column, for --captions")
    what.add_argument("--out", help="run directory (default: runs/<arch_id>)")
    recipe = parser.add_argument_group("recipe")
    recipe.add_argument("--batch-size", type=int, default=256,
                        help="global batch over all ranks, the contrastive batch (default: %(default)s)")
    recipe.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default: %(default)s)")
    recipe.add_argument("--warmup", type=int, default=500, help="linear warmup steps (default: %(default)s)")
    recipe.add_argument("--weight-decay", "--wd", dest="weight_decay", type=float, default=0.2,
                        help="AdamW's (default: %(default)s)")
    recipe.add_argument("--loss", choices=("clip", "siglip"), default="clip", help="(default: %(default)s)")
    recipe.add_argument("--siglip", dest="loss", action="store_const", const="siglip", help="--loss siglip")
    recipe.add_argument("--drop-path", type=float, default=0.1,
                        help="stochastic depth of the Transformer stage (default: %(default)s)")
    recipe.add_argument("--grad-clip-norm", type=float, help="clip the gradient norm (default: no clipping)")
    recipe.add_argument("--lock-text", metavar="CHECKPOINT", nargs="?", const="",
                        help="LTT: load the text tower from this checkpoint or export and freeze it")
    recipe.add_argument("--lock-text-unlocked-layers", type=int, default=0,
                        help="leave the last N text layers trainable under --lock-text (default: 0)")
    recipe.add_argument("--pretrained", metavar="CHECKPOINT",
                        help="start from this checkpoint's or export's weights (a fine-tune: `vitamin-nas export` "
                             "or `supernet export` directories too); the optimizer and schedule start afresh")
    recipe.add_argument("--seed", type=int, default=0, help="model init, data order, augmentation (default: 0)")
    engine = parser.add_argument_group("engineering")
    engine.add_argument("--precision", choices=tuple(PRECISIONS), default="auto",
                        help="auto: bf16 autocast on GPU, fp32 on CPU; bf16 = amp_bf16: bf16 autocast")
    engine.add_argument("--compile", "--torchcompile", dest="compile", action="store_true",
                        help="torch.compile (falls back to eager on failure)")
    engine.add_argument("--grad-checkpointing", action="store_true", help="recompute activations in backward")
    engine.add_argument("--accum-freq", type=int, default=1,
                        help="micro-batches per step, gradient accumulation (default: %(default)s)")
    engine.add_argument("--rungs", default="", help="comma-separated samples-seen thresholds to evaluate at")
    engine.add_argument("--checkpoint-every", type=int, help="samples between checkpoints (default: 10 per run)")
    engine.add_argument("--log-every", type=int, default=10, help="steps between metrics lines (default: %(default)s)")
    engine.add_argument("--workers", type=int, default=None,
                        help=f"data loader workers per rank (default: {LOADER_WORKERS}, at most this machine's CPUs)")
    engine.add_argument("--augment", default="default",
                        help="'default' (RandomResizedCrop 0.9-1) or 'vitamin_long' (0.4-1, colour jitter, grayscale)")
    engine.add_argument("--eval-batch-size", type=int, default=256, help="(default: %(default)s)")
    report = parser.add_argument_group("reporting")
    report.add_argument("--report-to", default="tensorboard", metavar="tensorboard,wandb",
                        help="where the curves go besides OUT/metrics.jsonl: tensorboard (OUT/tensorboard), wandb "
                             "(if installed), both, or none (default: tensorboard)")
    report.add_argument("--wandb-project-name", default="vitamin-nas", help="the W&B project (default: %(default)s)")
    report.add_argument("--name", help="the run's name in W&B (default: the run directory's name)")
    report.add_argument("--no-progress", action="store_true", help="no progress bar")
    report.add_argument("--json", action="store_true",
                        help="print one JSON line at the end (for machines) instead of the rung lines and table")
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


def run_settings(args: argparse.Namespace) -> tuple:
    """`(arch, text, TrainConfig, DataSource, ReportTo)` of the command line, checked before anything is built."""
    from nas.data import DataSource
    from nas.presets import load_arch
    from nas.train import ReportTo
    from nas.train.log import TENSORBOARD
    from nas.train_config import TrainConfig

    if args.lock_text == "":
        raise ConfigError("give the checkpoint or export whose text tower is loaded and locked (open_clip_train "
                          "takes it from --pretrained): --lock-text CHECKPOINT", field="--lock-text")
    if args.epochs < 1:
        raise ConfigError(f"must be an integer >= 1, got {args.epochs}", field="--epochs")
    arch, default_text = load_arch(args.arch)
    text = _text_tower(args.text, default_text)
    config = TrainConfig(
        samples=args.samples * args.epochs, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
        weight_decay=args.weight_decay, loss=args.loss, drop_path=args.drop_path,
        precision=PRECISIONS[args.precision], compile=args.compile, grad_checkpointing=args.grad_checkpointing,
        accum_freq=args.accum_freq, grad_clip_norm=args.grad_clip_norm, lock_text=args.lock_text,
        lock_text_unlocked_layers=args.lock_text_unlocked_layers, pretrained=args.pretrained,
        rungs=_rungs(args.rungs),
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, eval_batch_size=args.eval_batch_size,
        workers=min(LOADER_WORKERS, len(os.sched_getaffinity(0))) if args.workers is None else args.workers,
        seed=args.seed)
    data = DataSource(urls=args.data, augment=args.augment, captions=args.captions, metadata=args.metadata,
                      subset=args.subset)
    out = _out(args, arch)
    report_to = ReportTo.parse(args.report_to, out / TENSORBOARD, wandb_project=args.wandb_project_name,
                               name=args.name or out.resolve().name)
    return arch, text, config, data, report_to


def _out(args: argparse.Namespace, arch) -> Path:
    return Path(args.out or f"runs/{arch.arch_id}")


def _train(args: argparse.Namespace) -> int:
    from nas import status
    from nas.export import export_checkpoint
    from nas.train import OOMError, train

    arch, text, config, data, report_to = run_settings(args)
    zeroshot, retrieval = _eval_sets(args, arch.image_size)
    out = _out(args, arch)
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 reports and exports
    budgets = sorted({*config.rungs, config.samples})
    on_rung = None if args.json or not main_rank else lambda metrics: _print_rung(metrics, budgets)
    try:
        result = train(arch, text, data, config, out=out, zeroshot=zeroshot, retrieval=retrieval, on_rung=on_rung,
                       progress=not args.no_progress, report_to=report_to)
    except OOMError as err:
        print(f"vitamin-nas train: {err}; try a smaller --batch-size, --accum-freq or --grad-checkpointing",
              file=sys.stderr)
        return 1
    if not main_rank:
        return 0
    if result.status == status.DIVERGED:
        print(f"vitamin-nas train: the loss diverged at {result.samples_seen} samples (step {result.step}); "
              f"try a lower --lr or a longer --warmup", file=sys.stderr)
        return 1
    export = export_checkpoint(result.checkpoint, out / "open_clip")
    if args.json:
        summary = {"status": result.status, "arch": arch.name(), "arch_id": arch.arch_id, **result.final,
                   "compile": result.compile, "skipped": result.data.get("skipped", {}), "export": str(export)}
        print(json.dumps(summary))
        return 0
    print(_summary(result, arch, export, report_to))
    return 0


def _print_rung(metrics: dict, budgets: list[int]) -> bool:
    """One readable line per rung, above the progress bar."""
    from tqdm import tqdm

    tqdm.write(rung_line(metrics, budgets.index(metrics["budget"]) + 1, len(budgets)), file=sys.stdout)
    return False


def rung_line(metrics: dict, rung: int, rungs: int) -> str:
    """A rung as a person reads it: where, the loss, each evaluation with its interval, the speed."""
    parts = [f"rung {rung}/{rungs}: {metrics['samples_seen']:,} samples seen (step {metrics['step']})",
             f"loss {metrics['loss']:.4f}"]
    for name, label in (("zeroshot_top1", "zero-shot top-1"), ("zeroshot_top5", "top-5"),
                        ("image_to_text_R@1", "image->text R@1"), ("text_to_image_R@1", "text->image R@1")):
        if name in metrics:
            interval = f" [{100 * metrics[f'{name}_low']:.1f}, {100 * metrics[f'{name}_high']:.1f}]" \
                if f"{name}_low" in metrics else ""
            parts.append(f"{label} {100 * metrics[name]:.2f} %{interval}")
    if metrics.get("images_per_s"):
        parts.append(f"{metrics['images_per_s']:,.0f} img/s")
    if metrics.get("data_wait_share") is not None:
        parts.append(f"waiting for data {100 * metrics['data_wait_share']:.0f} %")
    if metrics.get("mfu") is not None:
        parts.append(f"MFU {100 * metrics['mfu']:.1f} %")
    if metrics.get("peak_memory_gib") is not None:
        parts.append(f"peak memory {metrics['peak_memory_gib']:.1f} GiB")
    return ", ".join(parts)


SUMMARY_COLUMNS = ("budget", "samples_seen", "loss", "zeroshot_top1", "zeroshot_top5", "image_to_text_R@1",
                   "text_to_image_R@1", "images_per_s", "mfu", "wall_s")


def _summary(result, arch, export: Path, report_to) -> str:
    from nas.tables import format_table, headers, rows

    columns = [c for c in SUMMARY_COLUMNS if any(r.get(c) is not None for r in result.rungs)]
    lines = [f"\n{result.status.replace('_', ' ')}: {arch.name()} (arch_id {arch.arch_id}), "
             f"{result.samples_seen:,} samples seen in {result.step:,} steps",
             format_table(headers(columns), rows(result.rungs, columns))]
    skipped = result.data.get("skipped", {})
    if skipped:
        lines.append("skipped samples: " + ", ".join(f"{n:,} {reason}" for reason, n in sorted(skipped.items())))
    if result.compile["requested"]:
        lines.append("torch.compile: " + ("compiled" if result.compile["compiled"] else
                                          f"fell back to eager ({result.compile['error']})"))
    lines.append(f"open_clip export: {export}  (nas.export.load_open_clip({str(export)!r}))")
    if report_to.tensorboard:
        lines.append(f"curves: tensorboard --logdir {report_to.tensorboard}")
    return "\n".join(lines)
