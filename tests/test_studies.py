"""The ViTamin studies: every YAML under studies/ is read by its loader; the design choices are matched in GMACs
(or, for the ablation variants, differ as the authors' own variants do); the families are the paper's (pure
ConvNeXt and CoAtNet towers without a Transformer stage); every (candidate, budget) is run with two seeds at the
paper's 1 : 4 : 10 budgets; the scaling ladders are what they say and share the design study's recipe and data;
labelled candidates and groups in study files."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import yaml

from nas.arch import Arch
from nas.cost import cost
from nas.errors import ConfigError
from nas.report import load_paper
from nas.study import DERIVED_TRAIN_FIELDS, Study, load_study, study_from_dict

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "studies"
#: Candidates compared at matched image GMACs, by study and group, and the tolerance.
MATCHED = {"vitamin_design_choices": {"family": ("ViT", "ConvNeXt", "CoAtNet", "ViTamin"),
                                      "conv_block": ("ViTamin", "ConvNeXtHybrid")},
           "vitamin_micro_design": {"ffn": ("ViTamin", "MLP-d12")}}
TOLERANCE = 0.05
#: The studies whose budgets are the paper's 128M : 512M : 1.28B samples seen.
PAPER_BUDGETS = ("vitamin_design_choices", "vitamin_micro_design")


def load(name: str) -> Study:
    return load_study(STUDIES / f"{name}.yaml")


def labelled(study: Study) -> dict[str, Arch]:
    return dict(zip(study.labels, study.archs))


def gmacs(study: Study) -> dict[str, float]:
    return {label: cost(arch).image_gmacs for label, arch in labelled(study).items()}


def test_every_yaml_under_studies_is_read_by_its_loader():
    for path in sorted(STUDIES.rglob("*.yaml")):
        if path.parent == STUDIES:
            load_study(path)
        else:
            assert path.parent.name == "paper", path
            load_paper(path)


def test_every_arch_file_is_an_arch_some_study_lists():
    listed = {arch for path in STUDIES.glob("*.yaml") for arch in load_study(path).archs}
    for path in sorted((STUDIES / "archs").glob("*.json")):
        assert Arch.from_json(path.read_text(), source=str(path)) in listed, path.name


@pytest.mark.parametrize("name, group", [(name, group) for name, groups in MATCHED.items() for group in groups])
def test_design_choices_are_matched_in_gmacs(name, group):
    study = load(name)
    assert study.groups[group] == MATCHED[name][group]
    cost_of = gmacs(study)
    reference = cost_of["ViTamin"]
    for label in MATCHED[name][group]:
        assert abs(cost_of[label] / reference - 1) <= TOLERANCE, label


def test_ablation_variants_differ_in_gmacs_as_the_authors_variants_do():
    cost_of = gmacs(load("vitamin_micro_design"))
    variants = {a["label"]: a["image_gmacs"] for a in load_paper().ablations}
    assert set(variants) <= set(cost_of)
    for label, paper_gmacs in variants.items():
        assert cost_of[label] / cost_of["ViTamin"] == pytest.approx(paper_gmacs / variants["ViTamin"], rel=0.02)


def test_design_choices_are_the_papers_four_families():
    study = load("vitamin_design_choices")
    archs = labelled(study)
    families = {label: arch.family for label, arch in archs.items()}
    assert families == {"ViTamin": "C-C-T/geglu", "ViT": "P-T/mlp", "ConvNeXt": "P-N-N-N-N", "CoAtNet": "M-M-R-R",
                        "ConvNeXtHybrid": "N-N-T/geglu"}
    for pure in ("ConvNeXt", "CoAtNet"):  # no Transformer stage: timm's ConvNeXt and CoAtNet layouts
        assert archs[pure].transformer is None
    assert [s.block for s in archs["CoAtNet"].stages] == ["mbconv_bn", "mbconv_bn", "rel_attention", "rel_attention"]
    assert [s.depth for s in archs["ConvNeXt"].stages] == [3, 3, 9, 3]  # ConvNeXt-T's
    assert [s.depth for s in archs["CoAtNet"].stages] == [2, 3, 5, 2]  # CoAtNet-0's
    paper = load_paper()
    assert {label: paper.models[label] for label in study.groups["family"]} == {
        "ViT": "ViT-S/16", "ConvNeXt": "ConvNeXt-T", "CoAtNet": "CoAtNet-0", "ViTamin": "ViTamin-S"}


@pytest.mark.parametrize("name", PAPER_BUDGETS)
def test_each_budget_is_a_run_of_its_own_at_the_papers_ratio(name):
    study = load(name)
    low, middle, high = study.budget.rungs
    assert (middle / low, high / low) == (4, 10)  # 128M : 512M : 1.28B
    assert study.budget.per_budget and study.budget.early_stopping == "none" and study.algorithm == "fixed"


@pytest.mark.parametrize("name", ["vitamin_design_choices", "vitamin_micro_design"])
def test_every_design_run_has_three_seeds_and_a_rerun_if_it_does_not_learn(name):
    study = load(name)
    seeds = collections.Counter((arch, schedule) for arch, schedule, _ in study.runs)
    assert set(seeds) == {(a, b) for a in range(len(study.archs)) for b in range(len(study.budget.schedules))}
    assert min(seeds.values()) >= 3 and study.trials == len(study.runs)
    assert study.repeats.not_learned >= 1


def test_model_ladder_trains_each_size_to_a_budget_where_the_sizes_separate():
    """Above the design study's largest budget (36k, where S, M and L were within a seed's noise), each a run of
    its own."""
    study = load("model_scaling")
    assert study.budget.rungs[-1] > max(load("vitamin_design_choices").budget.rungs)
    assert study.budget.per_budget and study.budget.early_stopping == "none" and study.algorithm == "fixed"


@pytest.mark.parametrize("name", ["vitamin_micro_design", "model_scaling", "data_scaling"])
def test_the_other_studies_share_the_design_studys_recipe_and_data(name):
    design, study = load("vitamin_design_choices"), load(name)
    recipe = [{k: v for k, v in s.train.to_dict().items() if k not in DERIVED_TRAIN_FIELDS} for s in (design, study)]
    assert recipe[0] == recipe[1] and study.text == design.text
    assert study.data == design.data  # one synthetic dataset, written once in the same directory


def test_model_ladder_grows_at_fixed_data():
    study = load("model_scaling")
    sizes = [cost(arch) for arch in study.archs]
    assert all(a.image_gmacs < b.image_gmacs and a.image_params < b.image_params for a, b in zip(sizes, sizes[1:]))
    assert sizes[-1].image_gmacs / sizes[0].image_gmacs > 20
    assert {arch.family for arch in study.archs} == {"C-C-T/geglu"}
    assert labelled(study)["M"] == labelled(load("vitamin_design_choices"))["ViTamin"]


def test_data_ladder_is_one_model_over_budgets_of_distinct_samples_half_an_octave_apart():
    study = load("data_scaling")
    assert study.archs == (labelled(load("vitamin_design_choices"))["ViTamin"],)
    rungs = study.budget.rungs
    assert len(rungs) >= 8 and all(b / a == pytest.approx(2**0.5, rel=1e-3) for a, b in zip(rungs, rungs[1:]))
    assert study.budget.per_budget and study.budget.early_stopping == "none"
    assert study.data.synthetic.samples >= rungs[-1]  # no sample is seen twice


def write(tmp_path: Path, **fields) -> Path:
    study = {"name": "t", "space": str(REPO / "search_spaces" / "tiny.yaml"),
             "data": {"synthetic": {"samples": 1000, "size": 64}, "dir": "data"},
             "objectives": {"zeroshot_top1": "max"}, "budget": {"min_samples": 100, "max_samples": 900},
             "train": {"batch_size": 50, "warmup": 2}, "algorithm": "fixed",
             "archs": {"ViTamin": str(STUDIES / "archs" / "vitamin_proxy.json"),
                       "ViT": str(STUDIES / "archs" / "vit_proxy.json")}, **fields}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_labelled_candidates_and_groups_reach_the_resolved_study(tmp_path):
    study = load_study(write(tmp_path, groups={"family": ["ViT", "ViTamin"]}))
    assert study.labels == ("ViTamin", "ViT") and study.groups == {"family": ("ViT", "ViTamin")}
    resolved = study.resolved()
    assert list(resolved["archs"]) == ["ViTamin", "ViT"] and resolved["groups"] == {"family": ["ViT", "ViTamin"]}
    again = study_from_dict(resolved)  # what the results database gives back
    assert again.labels == study.labels and again.groups == study.groups and again.archs == study.archs
    assert "archs" not in load_study(STUDIES / "quickstart.yaml").resolved()  # a sampled search lists none
    assert load_study(write(tmp_path, trials=1)).labels == ("ViTamin",)


@pytest.mark.parametrize("fields, field, message", [
    ({"groups": {"family": ["ViT", "Swin"]}}, "groups.family", "unknown label"),
    ({"groups": {"family": ["ViT"]}}, "groups.family", "at least two"),
    ({"groups": ["ViT", "ViTamin"]}, "groups", "mapping"),
    ({"archs": {"ViTamin": "ViTamin-Q"}}, "archs.ViTamin", "unknown preset"),
    ({"archs": [str(STUDIES / "archs" / "vit_proxy.json")], "groups": {"g": ["a", "b"]}}, "groups", "labelled"),
])
def test_bad_labels_and_groups_name_the_field(tmp_path, fields, field, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_study(write(tmp_path, **fields))
    assert info.value.field == field


def test_the_study_schema_is_the_typed_studys_and_ships_with_the_studies(run_cli):
    """studies/study.schema.json is what `study_schema()` makes from the typed configs (regenerate it with
    `vitamin-nas studies --schema > studies/study.schema.json`); every shipped study passes it, a misspelt field
    does not, and `studies --fields` lists the same fields."""
    import json

    jsonschema = pytest.importorskip("jsonschema")
    from nas.study.reader import TOP_FIELDS
    from nas.study.schema import SCHEMA_FILE, fields_reference, schema_text, study_schema
    from nas.train_config import TrainConfig

    assert (STUDIES / SCHEMA_FILE).read_text() == schema_text()
    schema = study_schema()
    assert list(schema["properties"]) == list(TOP_FIELDS)
    train = set(schema["properties"]["train"]["properties"])
    assert train == {f.name for f in TrainConfig.__dataclass_fields__.values()} - set(DERIVED_TRAIN_FIELDS)
    validator = jsonschema.Draft202012Validator(json.loads((STUDIES / SCHEMA_FILE).read_text()))
    for path in sorted(STUDIES.glob("*.yaml")):
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert not errors, (path.name, errors)
    typo = yaml.safe_load((STUDIES / "quickstart.yaml").read_text())
    typo["budget"]["reduction_factr"] = 3
    assert any("reduction_factr" in e.message for e in validator.iter_errors(typo))
    run = run_cli("studies", "--fields")
    assert run.returncode == 0 and run.stdout.strip() == fields_reference()
    assert "  reduction_factor: number = 3.0" in run.stdout
    assert "budget: mapping (required, unless extends gives it)" in run.stdout
