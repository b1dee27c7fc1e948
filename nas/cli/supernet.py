"""`vitamin-nas supernet`: train a weight-sharing supernet of a study's space, export its subnets.

    vitamin-nas supernet train studies/quickstart.yaml --out runs/sn --random-subnets 2
    vitamin-nas supernet train studies/quickstart.yaml --out runs/sn2 --workers 2    # 2 ranks on Ray Train
    vitamin-nas supernet rank runs/sn --samples 1000 --eval data/quickstart/eval
    vitamin-nas supernet export runs/sn --arch largest --out runs/sn/largest
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nas.errors import ConfigError, require_int


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
                    "rungs; rerun the same command to resume a killed run. With --workers N, N data-parallel "
                    "ranks on Ray Train (a local Ray, or the cluster at --address; gloo on CPUs, NCCL with one GPU "
                    "per rank; each rank the study's resources.cpus), each on its shard of every batch: they draw "
                    "the same subnets and average their gradients every step, taking the step one process takes "
                    "on the whole batch; resume with as many workers. Writes OUT/checkpoint.pt, OUT/metrics.jsonl "
                    "(its train lines with wall_s and cpu_s: the CPU-seconds of every rank), OUT/config.json and "
                    "OUT/tensorboard/.",
        epilog="examples:\n"
               "  vitamin-nas supernet train studies/quickstart.yaml --out runs/sn\n"
               "  vitamin-nas supernet train study.yaml --out runs/sn --samples 200000 --random-subnets 4 \\\n"
               "      --distill-weight 0.5 --image-size 32\n"
               "  vitamin-nas supernet train studies/quickstart.yaml --out runs/sn2 --workers 2 --device cpu\n"
               "  vitamin-nas supernet train study.yaml --out /shared/runs/sn --workers 8 --device cuda \\\n"
               "      --address 10.0.0.1:6379")
    train.add_argument("study", type=Path, help="the study file: its space, data, text tower and recipe")
    train.add_argument("--out", type=Path, required=True, help="the run directory (an existing one is resumed)")
    train.add_argument("--samples", type=int, help="samples seen (default: the study's budget.max_samples)")
    train.add_argument("--image-size", type=int, help="the resolution (default: the space's largest)")
    train.add_argument("--random-subnets", type=int, default=2,
                       help="random subnets per step besides the largest and smallest (default: %(default)s)")
    train.add_argument("--distill-weight", type=float, default=1.0,
                       help="weight of the distillation loss of the smaller subnets (default: %(default)s)")
    train.add_argument("--device", help="cpu, cuda or cuda:N (default: a GPU when there is one; with --workers, "
                                        "cpu or cuda: GPU ranks when the Ray cluster has GPUs)")
    train.add_argument("--workers", type=int, default=1,
                       help="data-parallel ranks on Ray Train (default: %(default)s, this process alone)")
    train.add_argument("--address", metavar="HOST:PORT|auto",
                       help="join an existing Ray cluster for the ranks instead of starting Ray locally")
    train.add_argument("--report-to", default="tensorboard", metavar="tensorboard,wandb",
                       help="where the curves go besides OUT/metrics.jsonl (default: tensorboard)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)


def _register_rank(sub: argparse._SubParsersAction) -> None:
    rank = sub.add_parser(
        "rank", help="score subnets by zero-shot accuracy with inherited weights; their Pareto front",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score subnets of the supernet by zero-shot top-1 and top-5 (and, when the eval directory "
                    "has a retrieval/ set, recall@1/5/10 both ways) with the weights they inherit from the newest "
                    "checkpoint, no retraining, each with its 95 %% interval over the eval set. Which subnets: a "
                    "uniform sample of the space's feasible archs at its resolution (--search sample, --samples N), "
                    "or Optuna's NSGA-II mutating and crossing over the space's choices for zero-shot top-1 against "
                    "image GMACs, keeping the subnets within --max-gmacs and --max-params (--search evolution: "
                    "POPULATION x GENERATIONS feasible proposals, each subnet scored once). Writes OUT/ranking.csv "
                    "(best first) and OUT/pareto.csv (the front of top-1 against image GMACs), each row with the "
                    "arch's JSON; prints the front. The same --seed draws the same subnets.",
        epilog="examples:\n"
               "  vitamin-nas supernet rank runs/sn --samples 1000 --eval data/quickstart/eval\n"
               "  vitamin-nas supernet rank runs/sn --samples 50 --eval imagenet/val --out runs/sn/rank50 --seed 1\n"
               "  vitamin-nas supernet rank runs/sn --search evolution --max-gmacs 0.5 --max-params 4 \\\n"
               "      --population 20 --generations 10 --eval data/quickstart/eval --out runs/sn/evolution")
    rank.add_argument("run", type=Path, help="the supernet's run directory (`supernet train --out`)")
    rank.add_argument("--search", choices=("sample", "evolution"), default="sample",
                      help="a uniform sample, or an evolutionary search under the limits (default: %(default)s)")
    rank.add_argument("--samples", type=int, help="--search sample: subnets to score (all of them if there are fewer)")
    rank.add_argument("--max-gmacs", type=float, help="--search evolution: at most this many image GMACs")
    rank.add_argument("--max-params", type=float, help="--search evolution: at most this many image parameters (M)")
    rank.add_argument("--population", type=int, default=20,
                      help="--search evolution: NSGA-II's population (default: %(default)s)")
    rank.add_argument("--generations", type=int, default=10,
                      help="--search evolution: generations (default: %(default)s)")
    rank.add_argument("--eval", type=Path, required=True,
                      help="zero-shot set: a class-folder directory, or a synthetic eval/ directory (its zeroshot/, "
                           "and its retrieval/ shards when there are)")
    rank.add_argument("--out", type=Path, help="where the CSVs go (default: RUN/rank)")
    rank.add_argument("--seed", type=int, default=0, help="which subnets are drawn or evolved (default: %(default)s)")
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
    from nas.search.loopback import prefer_loopback
    from nas.study import load_study
    from nas.supernet import SupernetConfig, train_supernet
    from nas.train import ReportTo
    from nas.train.log import TENSORBOARD

    if not args.address:
        prefer_loopback()  # before Ray is imported: a local instance on 127.0.0.1 only
    study = load_study(args.study)
    config = SupernetConfig(image_size=args.image_size, random_subnets=args.random_subnets,
                            distill_weight=args.distill_weight)
    report_to = ReportTo.parse(args.report_to, args.out / TENSORBOARD, name=args.out.resolve().name)
    try:
        result = train_supernet(study, config, args.out, samples=args.samples, progress=not args.no_progress,
                                device=args.device, report_to=report_to, workers=args.workers, address=args.address)
    except ConfigError as err:
        if err.field not in ("workers", "device"):
            raise
        raise ConfigError(err.message, field=f"--{err.field}") from None
    if result.resumed_from is not None:
        print(f"resumed from {result.resumed_from:,} samples seen")
    if result.status == status.DIVERGED:
        print(f"vitamin-nas supernet train: the loss diverged at {result.samples_seen} samples (step {result.step})",
              file=sys.stderr)
        return 1
    print(f"{result.status}: the supernet of {study.space.source}, {result.samples_seen:,} samples seen in "
          f"{result.step:,} steps ({result.wall_s:.1f} s, {result.cpu_s:.1f} CPU-s), "
          f"loss {result.final.get('loss', float('nan')):.4f}")
    print(f"checkpoint: {result.checkpoint}")
    return 0


def _rank(args: argparse.Namespace) -> int:
    from nas.data import retrieval_set, zeroshot_set
    from nas.supernet import load_supernet
    from nas.supernet.evolution import evolve, within_limits
    from nas.supernet.rank import SubnetScorer, ranked, sample_subnets, write_ranking
    from nas.tables import format_table

    if args.search == "sample" and args.samples is None:
        raise ConfigError("--search sample needs --samples N", field="--samples")
    supernet = load_supernet(args.run)
    try:
        archs = (sample_subnets(supernet, args.samples, args.seed) if args.search == "sample" else
                 within_limits(supernet, args.max_gmacs, args.max_params))
        require_int(args.population, "population", low=2)
        require_int(args.generations, "generations", low=1)
    except ConfigError as err:
        flag = "--max-params" if err.field == "max_params_m" else f"--{(err.field or 'search').replace('_', '-')}"
        raise ConfigError(err.message, field=flag) from None
    root = args.eval / "zeroshot" if (args.eval / "zeroshot").is_dir() else args.eval
    zeroshot = zeroshot_set(root, supernet.image_size)
    pairs = args.eval / "retrieval"
    retrieval = retrieval_set(str(pairs), supernet.image_size) if pairs.is_dir() else None
    scorer = SubnetScorer(supernet, zeroshot, retrieval, device=args.device, batch_size=args.batch_size)
    if args.search == "sample":
        records = ranked([scorer(arch) for arch in archs])
        how = f"{len(records)} of {len(supernet.candidates)} subnets scored"
    else:
        search = evolve(supernet, scorer, archs, population=args.population, generations=args.generations,
                        seed=args.seed)
        records = search.records
        how = (f"{len(records)} of the {search.feasible} subnets within the limits scored by NSGA-II "
               f"({args.population} x {args.generations}; {search.proposals} proposals, {search.infeasible} "
               f"infeasible)")
    ranking, pareto = write_ranking(records, args.out or args.run / "rank")
    front = sorted((r for r in records if r["pareto"]), key=lambda r: r["image_gmacs"])
    recall = ["text_to_image_R@1"] if retrieval is not None else []
    table = [[r["arch_name"], f"{r['image_gmacs']:.4g}", f"{r['image_params_m']:.3f}",
              *(_percent(r, metric) for metric in ["zeroshot_top1", *recall])] for r in front]
    print(f"{how} on {len(zeroshot.dataset)} zero-shot images"
          f"{f' and {len(retrieval.texts)} retrieval captions' if retrieval is not None else ''} with inherited "
          f"weights; the Pareto front (zero-shot top-1 against image GMACs, 95 % intervals):")
    print(format_table(["arch", "image GMACs", "image params (M)", "zero-shot top-1 % [95 %]",
                        *(f"{metric} % [95 %]" for metric in recall)], table))
    print(f"wrote {ranking} and {pareto}")
    return 0


def _percent(record: dict, metric: str) -> str:
    return (f"{100 * record[metric]:.1f} [{100 * record[metric + '_low']:.1f}, "
            f"{100 * record[metric + '_high']:.1f}] (n={record[metric + '_n']})")


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
