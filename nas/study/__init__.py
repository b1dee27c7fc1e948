"""`Study`: what one search runs, read from a YAML file in `studies/` (`load_study`) and checked before anything
starts.

    name: quickstart
    space: ../search_spaces/tiny.yaml        # the search space (its text tower and constraints apply), the name
                                             # of a shipped one (tiny, vitamin: `vitamin-nas studies`), or inline
    data:
      synthetic: {samples: 12000, size: 64}  # or urls: shards (dir, brace pattern, URL, pipe:)
      dir: ../data/quickstart                # where the synthetic data lives (written when absent)
      zeroshot: ...                          # eval sets (default for synthetic: dir/eval/...)
      retrieval: ...
      zeroshot_templates: ["{}"]             # optional: the zero-shot prompts (default: the set's templates.txt)
      captions: "{color} {shape}"            # optional: caption each image from its metadata row (a template)
      timeout: 600                           # seconds a pipe:/URL shard may send nothing before its trial
                                             # fails ("data stalled"; retried as the failures policy says)
      workers: auto                          # loader workers per trial + any nas.data.DataSource field
    text: {width: 64, layers: 2, heads: 2, context_length: 32}   # or a preset name; default: the space's
    train: {batch_size: 64, lr: 0.001, warmup: 20}               # nas.train_config.TrainConfig fields
    objectives: {zeroshot_top1: max, image_gmacs: min}           # one, or several (a Pareto search)
    algorithm: tpe                           # tpe | nsga2 | random | grid | fixed (then archs: [...])
    archs: {ViTamin: ViTamin-S, ViT: ViT-S-16}   # fixed: a list, or a mapping that labels each candidate
    groups: {family: [ViTamin, ViT]}         # labelled candidates that a report compares with each other
    sampler: {n_startup_trials: 4}           # keyword arguments of the Optuna sampler
    trials: 12
    budget: {min_samples: 1500, max_samples: 13500, reduction_factor: 3}   # ASHA rungs in samples seen
                                             # (+ early_stopping: asha|curve|none, schedule: shared|per_budget,
                                             #  between: evaluations between rungs, below: under the first)
    constraints: {image_gmacs: {max: 0.05}}  # on top of the space's
    resources: {cpus: 1, gpus: 0, memory_gib: null, concurrency: 2}   # per trial; with workers: N, per worker
                                             # of a data-parallel trial (Ray Train); gpus: 0.25 packs 4 per GPU
    storage: {keep: 3}                       # optional: the rung checkpoints of only the best 3 at each rung
    seed: 0
    failures: {max_retries: 2, oom_retries: 1}
    repeats: {seeds: [1], fraction: 0.25}    # listed candidates: the first quarter again with train.seed 1
                                             # (+ not_learned: N, any study: a run that did not learn, again
                                             #  with the next seed, up to N times)
    confirm: {top: 2, seeds: 1}              # after the search: the best 2 at the full budget, again with 1
                                             # more seed each; ranked then by their seed mean (nas.seeds)
    image_size: 32                           # listed candidates: measured at this resolution (a fidelity axis)
    proxy: {supernet: ../runs/sn, keep: 0.25}   # screen candidates by a trained supernet's score: a list trains
                                             # its best quarter, best first; a sampled study trains the best of
                                             # every 4 proposals (nas.search.screen)
    stand_in: {seconds_per_rung: 0.5}        # benchmarks of the search machinery: no training, a synthetic
                                             # curve per arch after that long per rung (nas.search.stand_in)
    extends: quickstart.yaml                 # every field not given here is that study's (see below); a path
                                             # or the name of a shipped study

A study that `extends` another takes the other's fields in their resolved form: `data`, `train`, `budget`,
`resources` and `failures` are merged field by field (`budget: {early_stopping: none}` keeps the base's
ladder), except that a `data` naming its own data (urls, synthetic or dir) replaces the base's; every other
field given replaces the base's; the base's `sampler`, `archs`, `groups` and `trials` are dropped when the
study chooses another algorithm, and its `groups` and `trials` when the study lists its own `archs`; `name` and
`description` are never inherited. So a study that measures what another searches follows that study's recipe
as it changes, instead of a copy of its numbers.

Relative paths are relative to the study file, except the `data.dir` of a study installed with the package,
which lands under the current directory (`nas.shipped`). Every error names the file and the field, and the CLI exits
with code 2 on it. A `Study` is plain, typed data (picklable): Ray ships it to every trial. What one training
run of it needs is `study.run_config(schedule, accum_freq)`, derived from `study.train` in that one place.
`study.resolved()` is the study in file form (space inlined, paths absolute): stored in the results database,
it reads back with `study_from_dict` (`nas.results.ResultStore.study()`).

`study` holds the typed study and its sections, `reader` reads a study file (or a resolved form) into one.
"""

from nas.study.reader import load_study, study_from_dict
from nas.study.study import (
    DERIVED_TRAIN_FIELDS,
    Budget,
    Confirm,
    FailurePolicy,
    Proxy,
    Repeats,
    Resources,
    StandIn,
    Storage,
    Study,
    StudyData,
)

__all__ = ["DERIVED_TRAIN_FIELDS", "Budget", "Confirm", "FailurePolicy", "Proxy", "Repeats", "Resources", "StandIn",
           "Storage", "Study", "StudyData", "load_study", "study_from_dict"]
