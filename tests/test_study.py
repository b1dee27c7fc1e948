"""Study files: every file in studies/ parses; bad input names the file and the field."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import yaml

from nas.errors import ConfigError
from nas.presets import preset
from nas.shipped import spaces
from nas.study import Budget, Resources, load_study, study_from_dict

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO / "studies").glob("*.yaml"))


def write(tmp_path: Path, **fields) -> Path:
    """A valid study in tmp_path (synthetic data, tiny space), with `fields` replacing or removing (None) keys."""
    study = {"name": "t", "space": str(REPO / "search_spaces" / "tiny.yaml"),
             "data": {"synthetic": {"samples": 1000, "size": 64}, "dir": "data"},
             "objectives": {"zeroshot_top1": "max"}, "trials": 4,
             "budget": {"min_samples": 100, "max_samples": 900, "reduction_factor": 3},
             "train": {"batch_size": 50, "warmup": 2}}
    for key, value in fields.items():
        if value is None:
            study.pop(key)
        else:
            study[key] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_every_study_file_parses(path):
    study = load_study(path)
    assert study.trials >= 1 and study.budget.rungs[-1] == study.budget.max_samples
    assert pickle.loads(pickle.dumps(study)).resolved() == study.resolved()
    for schedule in study.budget.schedules:  # the recipe is a valid TrainConfig for every run
        assert study.run_config(schedule).samples == schedule
    # the resolved form is a study file: it reads back as the same study (what the results database stores)
    again = study_from_dict(study.resolved(), source=str(path))
    assert again.resolved() == study.resolved() and again.archs == study.archs and again.train == study.train


def test_data_parallel_resources_and_storage_read_back_from_the_stored_study(tmp_path):
    study = load_study(write(tmp_path, resources={"workers": 2, "cpus": 4, "gpus": 1}, storage={"keep": 3}))
    assert study.resources.workers == 2 and study.storage.keep == 3
    resolved = study.resolved()
    assert resolved["resources"]["workers"] == 2 and resolved["storage"] == {"keep": 3}
    assert study_from_dict(resolved).resolved() == resolved
    plain = load_study(write(tmp_path)).resolved()  # as stored before either existed: --resume finds it unchanged
    assert "workers" not in plain["resources"] and "storage" not in plain
    assert {"mask_ratio", "pretrained"}.isdisjoint(plain["train"])  # train fields added later, at their defaults


def test_quickstart_study_is_a_small_pareto_search():
    study = load_study(REPO / "studies" / "quickstart.yaml")
    assert study.multi_objective and study.space.name == "tiny"
    assert study.data.dir == str(REPO / "data" / "quickstart")  # relative to the study file
    assert study.data.zeroshot == str(REPO / "data" / "quickstart" / "eval" / "zeroshot")


def test_captions_of_synthetic_data_come_from_its_metadata(tmp_path):
    study = load_study(write(tmp_path, data={"synthetic": {"samples": 1000, "size": 64}, "dir": "data",
                                             "captions": "{color} {shape}"}))
    source = study.data.source
    assert source.captions == "{color} {shape}" and source.metadata == str(tmp_path / "data" / "metadata")


def test_zeroshot_templates_replace_the_eval_sets_prompts(tmp_path):
    from nas.data import SynthConfig, synthesize, zeroshot_set

    study = load_study(write(tmp_path, data={"synthetic": {"samples": 1000, "size": 64}, "dir": "data",
                                             "zeroshot_templates": ["{}"]}))
    assert study.data.zeroshot_templates == ("{}",)
    assert study_from_dict(study.resolved(), source="x").data.zeroshot_templates == ("{}",)
    synthesize(tmp_path / "d", SynthConfig(samples=20, size=32, zeroshot_per_class=1, retrieval_samples=0))
    own = zeroshot_set(tmp_path / "d" / "eval" / "zeroshot", 32)
    chosen = zeroshot_set(tmp_path / "d" / "eval" / "zeroshot", 32, templates=study.data.zeroshot_templates)
    assert len(own.templates) > 1 and chosen.templates == ["{}"] and chosen.classnames == own.classnames


def test_defaults_and_derived_values(tmp_path):
    study = load_study(write(tmp_path))
    assert study.budget.rungs == (100, 300, 900)
    config = study.run_config(accum_freq=2)
    assert config.samples == 900 and config.rungs == (100, 300) and config.accum_freq == 2
    assert study.data.source.urls == str(tmp_path / "data" / "shards")
    assert study.data.retrieval == str(tmp_path / "data" / "eval" / "retrieval")
    assert study.resources.cpus == 1 and study.failures.max_retries == 2 and study.algorithm == "tpe"
    assert study.train.workers == 0 and study.run_config().seed == 0  # loader workers for 1 CPU: none
    assert [Resources(cpus=c).loader_workers for c in (1, 2, 4, 32)] == [0, 0, 3, 8]
    assert load_study(write(tmp_path, data={"synthetic": {"samples": 1000, "size": 64}, "dir": "data",
                                            "workers": 3})).train.workers == 3


@pytest.mark.parametrize("minimum, maximum, factor, rungs", [
    (100, 900, 3, (100, 300, 900)), (100, 1000, 3, (100, 300, 900, 1000)), (500, 500, 2, (500,)),
    (1000, 16000, 4, (1000, 4000, 16000)),
])
def test_budget_rungs_match_asha_milestones(minimum, maximum, factor, rungs):
    assert Budget(minimum, maximum, factor).rungs == rungs


def test_constraints_and_text_override_the_space(tmp_path):
    study = load_study(write(tmp_path, constraints={"image_gmacs": {"max": 0.02}}, text="ViTamin-S"))
    assert study.space.constraints["image_gmacs"].high == 0.02
    assert study.text.width == 384
    assert all(study.space.measures(a)["image_gmacs"] <= 0.02 for a in study.space.enumerate())


def test_fixed_and_grid_studies_list_their_candidates(tmp_path):
    arch = preset("ViTamin-S").replace(image_size=64)
    json_file = tmp_path / "a.json"
    json_file.write_text(arch.to_json())
    fixed = load_study(write(tmp_path, algorithm="fixed", archs=["a.json", arch.replace(embed_dim=64).to_dict()],
                             trials=None, constraints={"image_gmacs": {"max": 10}}))
    assert fixed.archs == (arch, arch.replace(embed_dim=64)) and fixed.trials == 2
    grid = load_study(write(tmp_path, algorithm="grid", trials=None))
    assert grid.trials == len(list(grid.space.enumerate())) == len(set(grid.archs))
    assert load_study(write(tmp_path, algorithm="grid", trials=5)).archs == grid.archs[:5]


@pytest.mark.parametrize("fields, field, message", [
    ({"colour": 1}, None, "unknown field"),
    ({"budget": None}, "budget", "missing"),
    ({"objectives": {"accuracy": "max"}}, "objectives.accuracy", "unknown metric"),
    ({"objectives": {"zeroshot_top1": "up"}}, "objectives.zeroshot_top1", "not one of max, min"),
    ({"objectives": {"image_gmacs": "min"}}, "objectives", "at least one measured metric"),
    ({"algorithm": "bayes"}, "algorithm", "not one of"),
    ({"budget": {"min_samples": 900, "max_samples": 100}}, "budget", "min_samples <= max_samples"),
    ({"budget": {"min_samples": 100, "max_samples": 900, "reduction_factor": 1}}, "budget.reduction_factor", "> 1"),
    ({"budget": {"min_samples": 100, "max_samples": 900, "early_stopping": "hyperband"}},
     "budget.early_stopping", "not one of"),
    ({"budget": {"min_samples": 100, "max_samples": 900, "schedule": "per_budget"}},
     "budget.schedule", "set early_stopping: none"),
    ({"budget": {"min_samples": 100, "max_samples": 900, "early_stopping": "none", "schedule": "per_budget"}},
     "budget.schedule", "algorithm fixed or grid"),
    ({"budget": {"min_samples": 100, "max_samples": 900, "schedule": "each"}}, "budget.schedule", "not one of"),
    ({"train": {"lr": -1}}, "train.lr", "positive"),
    ({"train": {"samples": 10}}, "train.samples", "set by budget"),
    ({"train": {"workers": 2}}, "train.workers", "set by data.workers"),
    ({"train": {"learning_rate": 0.1}}, "train", "unknown field"),
    ({"train": {"batch_size": 64, "warmup": 100}}, "train.warmup", "warmup steps"),
    ({"data": {"urls": "shards", "batch_size": 4}}, "data.batch_size", "set per candidate"),
    ({"data": {"dir": "x"}}, "data.urls", "missing"),
    ({"data": {"synthetic": {"samples": 10, "colours": 3}, "dir": "x"}}, "data.synthetic", "unknown field"),
    ({"data": {"urls": "shards", "zeroshot": "z", "captions": "{color}"}}, "data.metadata", "need both"),
    ({"data": {"urls": "shards", "retrieval": "r"}}, "data.zeroshot", "needs an evaluation set"),
    ({"data": {"urls": "shards", "zeroshot": "z", "zeroshot_templates": "{}"}}, "data.zeroshot_templates",
     "list of prompt templates"),
    ({"data": {"urls": "shards", "zeroshot": "z", "zeroshot_templates": ["a {} and a {}"]}},
     "data.zeroshot_templates", "exactly one"),
    ({"resources": {"cpus": -1}}, "resources.cpus", ">= 0"),
    ({"resources": {"gpus": 1.5}}, "resources.gpus", "whole"),
    ({"resources": {"concurrency": 0}}, "resources.concurrency", ">= 1"),
    ({"resources": {"workers": 0}}, "resources.workers", ">= 1"),
    ({"resources": {"workers": 2, "gpus": 0.5}}, "resources.gpus", "one whole GPU"),
    ({"resources": {"workers": 4}}, "resources.workers", "batch_size 50 does not split over 4 workers"),
    ({"resources": {"workers": 2}, "budget": {"min_samples": 100, "max_samples": 905}}, "resources.workers",
     r"budgets \(905 samples\) do not split evenly over 2 workers"),
    ({"storage": {"keep": 0}}, "storage.keep", ">= 1"),
    ({"storage": {"keep": "all"}}, "storage.keep", ">= 1"),
    ({"storage": {"kept": 1}}, "storage", "unknown field"),
    ({"failures": {"retries": 1}}, "failures", "unknown field"),
    ({"trials": None}, "trials", "missing"),
    ({"archs": ["ViTamin-S"]}, "archs", "only with algorithm: fixed"),
    ({"algorithm": "fixed", "archs": ["ViTamin-Q"]}, "archs[0]", "unknown preset"),
    ({"algorithm": "fixed", "archs": ["ViTamin-S"]}, "archs[0]", "violates the constraints"),
    ({"algorithm": "grid", "sampler": {"seed": 1}}, "sampler", "keyword arguments"),
    ({"name": "a b"}, "name", "letters, digits"),
    ({"space": "nowhere.yaml"}, "space", "no such search space file: .*nowhere.yaml"),
])
def test_bad_input_names_the_file_and_field(tmp_path, fields, field, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_study(write(tmp_path, **fields))
    assert info.value.source.endswith(".yaml")
    assert info.value.field == field


def test_a_bad_study_exits_with_code_2_naming_the_field(tmp_path, run_cli):
    path = write(tmp_path, objectives={"zeroshot_top1": "up"})
    run = run_cli("search", path)
    assert run.returncode == 2
    assert f"{path}: objectives.zeroshot_top1: 'up' is not one of max, min" in run.stderr


BAD_YAML = {  # text, (line, column) PyYAML reports, the problem
    "unclosed_list": ("name: t\nbudget: {min_samples: 100, max_samples: [900\n", (3, 1), "expected ',' or ']'"),
    "bad_indent": ("name: t\ndata:\n  dir: x\n   workers: 2\n", (4, 11), "mapping values are not allowed here"),
    "tab": ("name: t\n\tseed: 1\n", (2, 1), "found character '\\t' that cannot start any token"),
}


@pytest.mark.parametrize("case", sorted(BAD_YAML))
def test_a_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path, case):
    text, (line, column), problem = BAD_YAML[case]
    study = tmp_path / "study.yaml"
    study.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(problem)) as info:
        load_study(study)
    assert info.value.source == str(study) and info.value.field == f"line {line}, column {column}"
    assert "\n" not in str(info.value)


def bad_input(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A study file with one kind of bad input, and the one line `vitamin-nas search` must print for it."""
    space = tmp_path / "space.yaml"
    if case == "missing_space":
        path = write(tmp_path, space="spaces/nowhere.yaml")
        return path, (f"{path}: space: no such search space file: {tmp_path / 'spaces' / 'nowhere.yaml'} (relative "
                      f"paths are relative to the study file; shipped spaces by name: {', '.join(spaces())})")
    if case == "space_value":
        space.write_text((REPO / "search_spaces" / "tiny.yaml").read_text().replace("depth: [2, 3, 4]",
                                                                                     "depth: [2, three, 4]"))
        return write(tmp_path, space="space.yaml"), (
            f"{space}: transformer.depth: 'three' is not a positive integer; depth takes positive integers (one, a "
            "list of them or a range {low, high, step})")
    path = tmp_path / "study.yaml"
    if case == "duplicate_key":  # YAML alone keeps the last value, silently
        path.write_text(write(tmp_path, trials=12).read_text() + "trials: 3\n")
        first = path.read_text().splitlines().index("trials: 12") + 1
        last = len(path.read_text().splitlines())
        return path, (f"{path}: trials: given twice in one mapping (lines {first} and {last}); YAML would keep only "
                      "the last: remove one")
    path.write_text(BAD_YAML["unclosed_list"][0])
    return path, (f"{path}: line 3, column 1: not valid YAML: expected ',' or ']', but got '<stream end>' (while "
                  "parsing a flow sequence that starts at line 2, column 41)")  # the [ of max_samples


@pytest.mark.parametrize("case", ["missing_space", "space_value", "yaml_syntax", "duplicate_key"])
def test_bad_input_ends_a_search_with_one_line_before_anything_is_written(tmp_path, run_cli, case):
    path, line = bad_input(tmp_path, case)
    run = run_cli("search", path, "--out", tmp_path / "run")
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"vitamin-nas search: error: {line}"]
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_a_syntax_error_in_the_space_file_names_the_space_file(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text((REPO / "search_spaces" / "tiny.yaml").read_text().replace("depth: [2, 3, 4]", "depth: [2, 3, 4"))
    with pytest.raises(ConfigError, match="not valid YAML: expected ',' or ']'") as info:
        load_study(write(tmp_path, space="space.yaml"))
    # the depths' line holds "  depth: [2, 3, 4" (the list opens at column 10); the next line's "head_dim:"
    # cannot continue it
    lines = (REPO / "search_spaces" / "tiny.yaml").read_text().splitlines()
    depths = lines.index("  depth: [2, 3, 4]") + 1
    assert info.value.source == str(space) and info.value.field == f"line {depths + 1}, column 11"
