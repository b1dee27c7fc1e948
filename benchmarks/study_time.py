"""How long a study of listed candidates takes: each candidate's training and evaluation speed on one trial's
threads, measured briefly, then summed over every run the study makes.

    .venv/bin/python benchmarks/study_time.py studies/vitamin_design_choices.yaml [--data data/quickstart]
        [--samples 320] [--windows 3] [--skip 160] [--json]

For each candidate: `nas.train.train` on the study's data with its recipe (batch size, lr, warmup...) and
`torch.set_num_threads(resources.threads)`, for `--skip` samples untimed (allocation, the shuffle buffer)
and then `--windows` timed windows of `--samples` each, of which the fastest counts; then one zero-shot (and
retrieval) evaluation of the study's eval sets. Speeds are counted in the process's CPU time as well as in wall
time: on a machine others are using, CPU time is closer to what the same work takes on an idle core (though
still slowed by the caches and cores it shares), and the estimate uses it. A run of the study costs its
schedule's samples / training speed, plus one evaluation per budget it is measured at, plus `--startup`
seconds (worker, model and eval-set setup); the study's estimate is when the last run ends when the runs start
in the study's order (`Study.runs`), each on the first of `resources.concurrency` slots to come free.
Synthesis of the study's data, when it is not yet written, is not included.

`--data` times on another synthetic dataset of the same image size (one `vitamin-nas data synth` wrote; for
example the quickstart's) when the study's own is not written yet. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from nas.cost import cost
from nas.study import Study, load_study


def timed_training(study: Study, arch, data, samples: int, skip: int, windows: int) -> tuple[float, float]:
    """Images per second (CPU time, wall time) of training `arch` after `skip` untimed samples: the fastest of
    `windows` windows of `samples` each (the one others slowed least)."""
    from nas.train import train

    ends = tuple(skip + i * samples for i in range(windows + 1))
    config = dataclasses.replace(study.run_config(), samples=ends[-1], rungs=ends[:-1], warmup=1,
                                 checkpoint_every=0)
    marks = []

    def mark(_: dict) -> None:
        marks.append((time.process_time(), time.perf_counter()))

    train(arch, study.text, data, config, on_rung=mark)
    spans = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]
    return samples / min(cpu for cpu, _ in spans), samples / min(wall for _, wall in spans)


def timed_evaluation(study: Study, arch, zeroshot, retrieval) -> float:
    """CPU seconds of one evaluation of `arch` on the study's eval sets (untrained weights: the same work)."""
    from nas.evaluate import evaluate
    from nas.train.recipe import build_model

    model = build_model(arch, study.text, study.run_config())
    start = time.process_time()
    evaluate(model, zeroshot=zeroshot, retrieval=retrieval, context_length=study.text.context_length,
             batch_size=study.train.eval_batch_size)
    return time.process_time() - start


def estimate(study: Study, train_ips: dict[str, float], eval_s: dict[str, float], startup_s: float) -> dict:
    """Seconds of every run (by candidate), and the study's total on `resources.concurrency` slots."""
    per_run = []
    for index, schedule_index, _ in study.runs:
        arch = study.archs[index]
        schedule = study.budget.schedules[schedule_index]
        evaluations = len(study.budget.measured_at(schedule))
        per_run.append((arch.arch_id, schedule / train_ips[arch.arch_id] + evaluations * eval_s[arch.arch_id]
                        + startup_s))
    slots = [0.0] * (study.resources.concurrency or 1)
    for _, seconds in per_run:  # Ray starts the runs in this order, each on the first slot to come free
        slots[slots.index(min(slots))] += seconds
    total = max(slots)
    by_arch = {}
    for arch_id, seconds in per_run:
        by_arch[arch_id] = by_arch.get(arch_id, 0.0) + seconds
    return {"runs": len(per_run), "total_s": total, "by_arch_s": by_arch,
            "samples": sum(study.budget.schedules[b] for _, b, _ in study.runs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--data", type=Path, help="a synthetic dataset to time on instead of the study's")
    parser.add_argument("--samples", type=int, default=320, help="training samples per timed window (default 320)")
    parser.add_argument("--skip", type=int, default=160, help="untimed samples before them")
    parser.add_argument("--windows", type=int, default=3, help="timed windows per candidate; the fastest counts "
                                                               "(default 3)")
    parser.add_argument("--startup", type=float, default=8.0, help="seconds of setup per run (default 8)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args()

    from nas.data import retrieval_set, zeroshot_set

    study = load_study(args.study)
    if not study.archs:
        parser.error("the study lists no candidates (algorithm fixed or grid)")
    source, zeroshot_dir, retrieval_dir = study.data.source, study.data.zeroshot, study.data.retrieval
    if args.data is not None:
        source = dataclasses.replace(source, urls=str(args.data / "shards"),
                                     metadata=str(args.data / "metadata") if source.metadata else None)
        zeroshot_dir = str(args.data / "eval" / "zeroshot") if zeroshot_dir else None
        retrieval_dir = str(args.data / "eval" / "retrieval") if retrieval_dir else None
    torch.set_num_threads(study.resources.threads)
    rows, train_ips, eval_s = [], {}, {}
    for label, arch in zip(study.labels or [a.name() for a in study.archs], study.archs):
        zeroshot = zeroshot_set(zeroshot_dir, arch.image_size, templates=study.data.zeroshot_templates) \
            if zeroshot_dir else None
        retrieval = retrieval_set(retrieval_dir, arch.image_size) if retrieval_dir else None
        cpu_ips, wall_ips = timed_training(study, arch, source, args.samples, args.skip, args.windows)
        train_ips[arch.arch_id], eval_s[arch.arch_id] = cpu_ips, timed_evaluation(study, arch, zeroshot, retrieval)
        rows.append({"label": label, "arch": arch.name(), "image_mmacs": 1e3 * cost(arch).image_gmacs,
                     "train_img_s": cpu_ips, "train_img_s_wall": wall_ips, "eval_s": eval_s[arch.arch_id]})
        print(f"  {label}: {cpu_ips:.0f} img/s (CPU time; {wall_ips:.0f} wall), eval {eval_s[arch.arch_id]:.1f} s",
              file=sys.stderr)
    result = estimate(study, train_ips, eval_s, args.startup)
    for row in rows:
        arch = next(a for a in study.archs if a.name() == row["arch"])
        row["minutes_all_runs"] = result["by_arch_s"][arch.arch_id] / 60
    if args.json:
        print(json.dumps({"study": study.name, "rows": rows, "runs": result["runs"], "samples": result["samples"],
                          "estimate_min": result["total_s"] / 60, "concurrency": study.resources.concurrency}))
        return 0
    print(f"{study.name}: {result['runs']} runs, {result['samples']:,} samples seen in all, "
          f"{study.resources.threads} thread(s) per trial, {study.resources.concurrency or 1} at once")
    print(f"{'label':14s} {'arch':48s} {'MMACs':>6s} {'img/s':>6s} {'(wall)':>6s} {'eval s':>6s} {'min':>6s}")
    for row in rows:
        print(f"{row['label']:14s} {row['arch']:48s} {row['image_mmacs']:6.2f} {row['train_img_s']:6.0f} "
              f"{row['train_img_s_wall']:6.0f} {row['eval_s']:6.1f} {row['minutes_all_runs']:6.1f}")
    print(f"estimated wall time on idle cores: {result['total_s'] / 60:.1f} min (synthesis of the data not included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
