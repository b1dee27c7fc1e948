"""`vitamin-nas supernet`: train a weight-sharing supernet of a study's space, export its subnets.

    vitamin-nas supernet train studies/quickstart.yaml --out runs/sn --random-subnets 2
    vitamin-nas supernet rank runs/sn --samples 1000 --eval data/quickstart/eval
    vitamin-nas supernet export runs/sn --arch largest --out runs/sn/largest
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nas.errors import ConfigError


def register(commands: argparse._SubParsersAction) -> None:
    supernet = commands.add_parser(
        "supernet", help="a weight-sharing supernet of a study's space: train it, rank and export its subnets",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  vitamin-nas supernet train studies/quickstart.yaml --out runs/sn\n"
               "  vitamin-nas supernet rank runs/sn --samples 1000 --eval data/quickstart/eval\n"
               "  vitamin-nas supernet export runs/sn --arch largest --out runs/sn/largest",
        description="One-shot NAS: one supernet holds every candidate of a search space (sizes are slices of the "
                    "largest tower's weights, each block type of a stage a path of its own, the text tower "
                    "shared), trained once with the sandwich rule; its subnets are then exported with the weights "
                    "they inherit, or ranked by zero-shot accuracy with those weights.")
    sub = supernet.add_subparsers(dest="supernet_command", required=True, metavar="COMMAND")
    _register_train(sub)
    _register_rank(sub)
    _register_export(sub)


def _register_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train", help="train the supernet of a study's space with the sandwich rule",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train the supernet of the study's space on the study's data with its recipe (train section), "
                    "to its largest budget (or --samples). Each step trains the largest subnet, the smallest and "
                    "--random-subnets random ones on one batch with the CLIP loss; the smaller ones also match "
                    "the largest one's image-text logits (in-place distillation, KL weighted by "
                    "--distill-weight). Checkpoints every train.checkpoint_every samples and at the study's "
                    "rungs; rerun the same command to resume a killed run. Writes OUT/checkpoint.pt, "
                    "OUT/metrics.jsonl, OUT/config.json and OUT/tensorboard/.",
        epilog="examples:\n"
               "  vitamin-nas supernet train studies/quickstart.yaml --out runs/sn\n"
               "  vitamin-nas supernet train study.yaml --out runs/sn --samples 200000 --random-subnets 4 \\\n"
               "      --distill-weight 0.5 --image-size 32")
    train.add_argument("study", type=Path, help="the study file: its space, data, text tower and recipe")
    train.add_argument("--out", type=Path, required=True, help="the run directory (an existing one is resumed)")
    train.add_argument("--samples", type=int, help="samples seen (default: the study's budget.max_samples)")
    train.add_argument("--image-size", type=int, help="the resolution (default: the space's largest)")
    train.add_argument("--random-subnets", type=int, default=2,
                       help="random subnets per step besides the largest and smallest (default: %(default)s)")
    train.add_argument("--distill-weight", type=float, default=1.0,
                       help="weight of the distillation loss of the smaller subnets (default: %(default)s)")
    train.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU when there is one)")
    train.add_argument("--report-to", default="tensorboard", metavar="tensorboard,wandb",
                       help="where the curves go besides OUT/metrics.jsonl (default: tensorboard)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)


def _register_rank(sub: argparse._SubParsersAction) -> None:
    rank = sub.add_parser(
        "rank", help="score subnets by zero-shot accuracy with inherited weights; their Pareto front",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score a sample of the supernet's subnets (drawn uniformly from the space's feasible archs at "
                    "its resolution) by zero-shot top-1 and top-5 with the weights they inherit from the newest "
                    "checkpoint, no retraining, each with its 95 %% interval over the eval set's images. Writes "
                    "OUT/ranking.csv (best first) and OUT/pareto.csv (the front of top-1 against image GMACs), "
                    "each row with the arch's JSON; prints the front.",
        epilog="examples:\n"
               "  vitamin-nas supernet rank runs/sn --samples 1000 --eval data/quickstart/eval\n"
               "  vitamin-nas supernet rank runs/sn --samples 50 --eval imagenet/val --out runs/sn/rank50 --seed 1")
    rank.add_argument("run", type=Path, help="the supernet's run directory (`supernet train --out`)")
    rank.add_argument("--samples", type=int, required=True, help="subnets to score (all of them if there are fewer)")
    rank.add_argument("--eval", type=Path, required=True,
                      help="zero-shot set: a class-folder directory, or a synthetic eval/ directory (its zeroshot/)")
    rank.add_argument("--out", type=Path, help="where the CSVs go (default: RUN/rank)")
    rank.add_argument("--seed", type=int, default=0, help="which subnets are drawn (default: %(default)s)")
    rank.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    rank.add_argument("--batch-size", type=int, default=256, help="eval batch (default: %(default)s)")
    rank.set_defaults(func=_rank)


def _register_export(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser(
        "export", help="a subnet as a stand-alone open_clip model with its inherited weights",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write one subnet of a trained supernet (its newest checkpoint) as the directory `vitamin-nas "
                    "export` writes (open_clip config, safetensors weights, arch.json): the stand-alone model "
                    "computes what the supernet computes for that subnet.",
        epilog="examples:\n"
               "  vitamin-nas supernet export runs/sn --arch largest --out runs/sn/largest\n"
               "  vitamin-nas space sample search_spaces/tiny.yaml --json > a.json\n"
               "  vitamin-nas supernet export runs/sn --arch a.json --out runs/sn/a\n\n"
               "then, in Python:\n  model, _, preprocess = nas.export.load_open_clip('runs/sn/a')")
    export.add_argument("run", type=Path, help="the supernet's run directory (`supernet train --out`)")
    export.add_argument("--arch", required=True,
                        help="largest, smallest, or an arch FILE.json of the space (any the CLI writes)")
    export.add_argument("--out", type=Path, required=True, help="the export directory to write")
    export.set_defaults(func=_export)


def _train(args: argparse.Namespace) -> int:
    from nas import status
    from nas.study import load_study
    from nas.supernet import SupernetConfig, train_supernet
    from nas.train import ReportTo
    from nas.train.log import TENSORBOARD

    study = load_study(args.study)
    config = SupernetConfig(image_size=args.image_size, random_subnets=args.random_subnets,
                            distill_weight=args.distill_weight)
    report_to = ReportTo.parse(args.report_to, args.out / TENSORBOARD, name=args.out.resolve().name)
    result = train_supernet(study, config, args.out, samples=args.samples, progress=not args.no_progress,
                            device=args.device, report_to=report_to)
    if result.resumed_from is not None:
        print(f"resumed from {result.resumed_from:,} samples seen")
    if result.status == status.DIVERGED:
        print(f"vitamin-nas supernet train: the loss diverged at {result.samples_seen} samples (step {result.step})",
              file=sys.stderr)
        return 1
    print(f"{result.status}: the supernet of {study.space.source}, {result.samples_seen:,} samples seen in "
          f"{result.step:,} steps ({result.wall_s:.1f} s), loss {result.final.get('loss', float('nan')):.4f}")
    print(f"checkpoint: {result.checkpoint}")
    return 0


def _rank(args: argparse.Namespace) -> int:
    from nas.data import zeroshot_set
    from nas.supernet import load_supernet
    from nas.supernet.rank import rank as rank_subnets
    from nas.supernet.rank import sample_subnets, write_ranking
    from nas.tables import format_table

    supernet = load_supernet(args.run)
    root = args.eval / "zeroshot" if (args.eval / "zeroshot").is_dir() else args.eval
    zeroshot = zeroshot_set(root, supernet.image_size)
    try:
        archs = sample_subnets(supernet, args.samples, args.seed)
    except ConfigError as err:
        raise ConfigError(err.message, field="--samples") from None
    records = rank_subnets(supernet, zeroshot, archs, device=args.device, batch_size=args.batch_size)
    ranking, pareto = write_ranking(records, args.out or args.run / "rank")
    front = sorted((r for r in records if r["pareto"]), key=lambda r: r["image_gmacs"])
    table = [[r["arch_name"], f"{r['image_gmacs']:.4g}", f"{r['image_params_m']:.3f}",
              f"{100 * r['zeroshot_top1']:.1f} [{100 * r['zeroshot_top1_low']:.1f}, "
              f"{100 * r['zeroshot_top1_high']:.1f}]"] for r in front]
    print(f"{len(records)} of {len(supernet.candidates)} subnets scored on {len(zeroshot.dataset)} zero-shot images "
          f"with inherited weights; the Pareto front (zero-shot top-1 against image GMACs, 95 % intervals):")
    print(format_table(["arch", "image GMACs", "image params (M)", "zero-shot top-1 % [95 %]"], table))
    print(f"wrote {ranking} and {pareto}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from nas.supernet import load_supernet
    from nas.supernet.export import export_subnet

    supernet = load_supernet(args.run)
    arch = subnet(supernet, args.arch)
    out = export_subnet(supernet, arch, args.out, source=args.arch)
    cost = supernet.cost(arch)
    print(f"exported {arch.name()} (arch_id {arch.arch_id}, {cost.image_params / 1e6:.2f} M image parameters, "
          f"{cost.image_gmacs:.4f} image GMACs) from {args.run}")
    print(f"to {out}; load it with\n  model, _, preprocess = nas.export.load_open_clip({str(out)!r})")
    return 0


def subnet(supernet, spec: str):
    """The subnet `spec` names: `largest`, `smallest`, or an arch file (`nas.presets.load_arch`)."""
    from nas.presets import load_arch

    if spec in ("largest", "smallest"):
        return getattr(supernet, spec)
    if not spec.endswith(".json"):
        raise ConfigError("give largest, smallest or an arch FILE.json", field="--arch")
    return load_arch(spec)[0]
