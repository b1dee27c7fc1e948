"""How big a search one driver runs: the real driver on stand-in trials (`stand_in: {seconds_per_rung: S}`,
`nas.search.stand_in`), beside the same stand-in through bare Ray Tune, at N trials with C running at once.

    .venv/bin/python benchmarks/driver_scale.py [--trials 1000] [--concurrency 50] [--seconds-per-rung 0.5]
        [--algorithm tpe] [--out DIR] [--no-bare] [--profile]

Each search runs in a driver process of its own (`vitamin-nas search`, on the shipped vitamin space of 16,000
towers, rungs at 1,000 / 3,000 / 9,000 samples, ASHA with reduction factor 3, each trial asking Ray for 0.01
CPU), polled every 0.2 s for its own CPU time (user + system, its threads only: not Ray's GCS, raylet or
workers) and its peak resident memory. Then, on the finished database:

- driver CPU-seconds per trial and per reported result (a rung row of study.db), less its start-up (imports,
  Ray, the study's checks: the CPU it had spent when the first rung row appeared);
- the time from a trial's report to its row in study.db: the row's `reported_at` (the recorder's clock) less
  the modification time of the rung's checkpoint (the stand-in writes it just before `tune.report`): median,
  95th percentile, max;
- study.db's size, `vitamin-nas status` and `vitamin-nas results` wall time (each a fresh process, as a user
  runs them);
- bare Ray Tune: a `Tuner` of a function that sleeps and reports the same curve law, Ray's own
  `ASHAScheduler` with the same rungs, random arch ids, no searcher, recorder, ledger or database, with Ray
  Tune's loggers off as the toolkit's driver has them: the toolkit's overhead is the ratio of the two drivers'
  CPU per result (the bare driver's in `Tuner.fit`), measured in one run.

`--profile` runs the toolkit's driver under cProfile and prints its 25 costliest functions (cumulative), where a
cost that grows faster than the trial count shows. Prints figures; asserts nothing. On a machine others use,
wall times stretch; CPU-seconds less so.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TICKS = os.sysconf("SC_CLK_TCK")
BUDGET = {"min_samples": 1000, "max_samples": 9000, "reduction_factor": 3}
#: The smallest synthetic dataset a study takes (a stand-in never reads it): written before the driver starts.
SYNTH = {"samples": 64, "size": 32, "samples_per_shard": 64, "zeroshot_per_class": 1, "retrieval_samples": 8}


def study_file(directory: Path, trials: int, concurrency: int, seconds: float, algorithm: str) -> Path:
    """A stand-in study of the vitamin space, its data written here (the driver's CPU counts the search only)."""
    from nas.data import SynthConfig, synthesize

    synthesize(directory / "data", SynthConfig(**SYNTH))
    study = {"name": "driver-scale", "space": "vitamin", "algorithm": algorithm, "trials": trials, "seed": 0,
             "data": {"synthetic": SYNTH, "dir": str(directory / "data")},
             "train": {"batch_size": 32, "warmup": 1}, "objectives": {"zeroshot_top1": "max"}, "budget": BUDGET,
             "resources": {"cpus": 0.01, "concurrency": concurrency}, "failures": {"max_retries": 0},
             "stand_in": {"seconds_per_rung": seconds}}
    path = directory / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def watched(command: list[str], log: Path, started=lambda: False) -> dict[str, float]:
    """Run `command`; its wall time, own CPU seconds, those it had spent when `started()` first held (the search
    begun: its start-up, a fixed cost) and peak resident MB (from /proc, every 0.2 s)."""
    began = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    cpu = peak = 0.0
    startup = None
    while process.poll() is None:
        if startup is None and started():
            startup = cpu
        try:
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / TICKS
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
        except (OSError, IndexError):
            pass
        time.sleep(0.2)
    if process.returncode:
        sys.exit(f"{' '.join(command)} exited with {process.returncode}; see {log}")
    return {"wall_s": time.monotonic() - began, "cpu_s": cpu, "startup_cpu_s": startup or 0.0, "peak_mb": peak}


def report_latencies(out: Path) -> list[float]:
    """Seconds from each rung's report (its checkpoint's mtime) to its row in study.db (`reported_at`)."""
    with sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT checkpoint, reported_at FROM nas_rungs WHERE checkpoint != ''").fetchall()
    latencies = []
    for checkpoint, reported_at in rows:
        path = out / checkpoint / "checkpoint.pt"
        if path.exists():
            latencies.append(reported_at - path.stat().st_mtime)
    return latencies


def first_result(out: Path) -> bool:
    """Whether study.db holds a rung row yet."""
    try:
        with sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True, timeout=0.1) as db:
            return db.execute("SELECT 1 FROM nas_rungs LIMIT 1").fetchone() is not None
    except sqlite3.Error:
        return False


def counts(out: Path) -> tuple[int, int]:
    with sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True) as db:
        return (db.execute("SELECT COUNT(*) FROM nas_trials").fetchone()[0],
                db.execute("SELECT COUNT(*) FROM nas_rungs").fetchone()[0])


def timed(command: list[str]) -> float:
    began = time.monotonic()
    subprocess.run(command, capture_output=True, check=True)
    return time.monotonic() - began


def bare(trials: int, concurrency: int, seconds: float, storage: str) -> None:
    """The stand-in through bare Ray Tune (run in a process of its own: `--bare`)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from nas.search.stand_in import StandInCurve

    for name in ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "TUNE_DISABLE_STRICT_METRIC_CHECKING"):
        os.environ[name] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    rungs = [BUDGET["min_samples"] * BUDGET["reduction_factor"] ** i for i in range(3)]

    def trainable(config):
        curve = StandInCurve.of(config["arch"], 0)
        for budget in rungs:
            time.sleep(seconds)
            tune.report({"samples_seen": budget, **curve.metrics(budget, ("zeroshot_top1",))})

    class Results(tune.Callback):
        count = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            Results.count += 1

    ray.init(include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    scheduler = ASHAScheduler(time_attr="samples_seen", metric="zeroshot_top1", mode="max", max_t=rungs[-1],
                              grace_period=rungs[0], reduction_factor=BUDGET["reduction_factor"], brackets=1)
    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 0.01}),
                       param_space={"arch": tune.sample_from(lambda _: f"{random.getrandbits(64):016x}")},
                       tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=trials,
                                                   max_concurrent_trials=concurrency),
                       run_config=tune.RunConfig(name="bare", storage_path=storage, verbose=0,
                                                 callbacks=[Results()]))
    began = time.process_time()
    tuner.fit()
    print(json.dumps({"results": Results.count, "fit_cpu_s": time.process_time() - began}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds-per-rung", type=float, default=0.5)
    parser.add_argument("--algorithm", default="tpe", choices=("tpe", "random"))
    parser.add_argument("--out", type=Path, help="where the searches go (default: a temporary directory)")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare Ray Tune run")
    parser.add_argument("--profile", action="store_true", help="run the toolkit's driver under cProfile")
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)  # the bare run's own process
    args = parser.parse_args()
    if args.bare:
        bare(args.trials, args.concurrency, args.seconds_per_rung, str(args.out))
        return
    root = args.out or Path(tempfile.mkdtemp(prefix="driver-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    study = study_file(root, args.trials, args.concurrency, args.seconds_per_rung, args.algorithm)
    out = root / "run"
    profile = ["-m", "cProfile", "-o", str(root / "driver.prof")] if args.profile else []
    cli = [sys.executable, "-m", "nas.cli"]
    driver = watched([sys.executable, *profile, "-m", "nas.cli", "search", str(study), "--out", str(out)],
                     root / "driver.log", lambda: first_result(out))
    searching = driver["cpu_s"] - driver["startup_cpu_s"]
    trials, results = counts(out)
    latencies = sorted(report_latencies(out))
    rows = [("trials / results (rung rows)", f"{trials} / {results}"),
            ("driver wall s", f"{driver['wall_s']:.0f}"),
            ("driver CPU s: start-up (to the first result) + search",
             f"{driver['startup_cpu_s']:.1f} + {searching:.1f}"),
            ("driver CPU ms per trial (search)", f"{1000 * searching / max(trials, 1):.0f}"),
            ("driver CPU ms per result (search)", f"{1000 * searching / max(results, 1):.0f}"),
            ("report -> study.db row s (median / p95 / max)",
             f"{statistics.median(latencies):.2f} / {latencies[int(0.95 * (len(latencies) - 1))]:.2f} / "
             f"{latencies[-1]:.2f}" if latencies else "-"),
            ("study.db MB", f"{(out / 'study.db').stat().st_size / 2**20:.1f}"),
            ("`status` s", f"{timed([*cli, 'status', str(out)]):.2f}"),
            ("`results` s", f"{timed([*cli, 'results', str(out)]):.2f}"),
            ("driver peak RSS MB", f"{driver['peak_mb']:.0f}")]
    if not args.no_bare:
        bare_run = watched([sys.executable, __file__, "--bare", "--trials", str(args.trials), "--concurrency",
                            str(args.concurrency), "--seconds-per-rung", str(args.seconds_per_rung), "--out",
                            str(root / "bare")], root / "bare.log")
        bare_fit = json.loads((root / "bare.log").read_text().strip().splitlines()[-1])
        bare_results, bare_cpu = bare_fit["results"], bare_fit["fit_cpu_s"]
        rows += [("bare Ray Tune: wall s / CPU s (all, in Tuner.fit) / results",
                  f"{bare_run['wall_s']:.0f} / ({bare_run['cpu_s']:.1f}, {bare_cpu:.1f}) / {bare_results}"),
                 ("bare Ray Tune: CPU ms per result", f"{1000 * bare_cpu / max(bare_results, 1):.0f}"),
                 ("bare Ray Tune: peak RSS MB", f"{bare_run['peak_mb']:.0f}"),
                 ("toolkit / bare, CPU per result (search)",
                  f"{(searching / max(results, 1)) / (bare_cpu / max(bare_results, 1)):.1f}x")]
    print(f"driver_scale: {args.trials} trials, {args.concurrency} at once, {args.seconds_per_rung} s per rung, "
          f"{args.algorithm} (in {root})")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if args.profile:
        pstats.Stats(str(root / "driver.prof")).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
