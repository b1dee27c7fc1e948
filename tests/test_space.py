"""SearchSpace: YAML parsing and errors, suggest/sample/enumerate/contains, constraints, Optuna and pickling."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from nas.cost import cost
from nas.errors import ConfigError
from nas.models import build_vision_tower
from nas.presets import preset
from nas.space import SearchSpace

REPO = Path(__file__).resolve().parents[1]
SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def tiny() -> SearchSpace:
    return SearchSpace.load(REPO / "search_spaces" / "tiny.yaml")


@pytest.fixture(scope="module")
def vitamin() -> SearchSpace:
    return SearchSpace.load(REPO / "search_spaces" / "vitamin.yaml")


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_parses_and_samples(path):
    space = SearchSpace.load(path)
    assert space.finite and space.size() > 0
    arch = space.sample(0)
    assert space.contains(arch) and space.is_feasible(arch)


def test_tiny_space_enumerates_completely_and_builds(tiny):
    archs = list(tiny.enumerate(feasible=False))
    assert len(archs) == tiny.size() == 864
    assert len({a.arch_id for a in archs}) == len(archs)
    blocks = {s.block for a in archs for s in a.stages}
    assert blocks == {"mbconv", "convnext", "attention"}
    assert {a.image_size for a in archs} == {32, 64}
    for arch in archs[::37]:  # a spread of them really run, at their resolution
        tower = build_vision_tower(arch).eval()
        with torch.no_grad():
            assert tower(torch.randn(1, 3, arch.image_size, arch.image_size)).shape == (1, 64)


def test_vitamin_space_spans_the_paper_family(vitamin):
    for name in ("ViTamin-S", "ViTamin-B", "ViTamin-L", "ConvNeXtHybrid-S", "ConvNeXtHybrid-B"):
        assert vitamin.contains(preset(name).replace(embed_dim=512)), name
    assert not vitamin.contains(preset("ViT-B-16").replace(embed_dim=512))
    assert not vitamin.contains(preset("ViTamin-XL-256"))  # 256 px, no position embedding
    # the ablation axes: conv block, width ratio 4C/6C/8C, GeGLU vs MLP
    params = dict(vitamin.params())
    assert params["stages.1.block"].values == ("mbconv", "convnext")
    assert params["transformer.width_mult[128]"].values == (4, 6, 8)
    assert params["transformer.mlp"].values == ("geglu", "mlp")
    assert vitamin.size() == sum(1 for _ in vitamin.enumerate(feasible=False))


CONVNEXT_SPACE = """
name: convnext
image_size: 224
embed_dim: 384
stem: patch
patch_size: 4
base_width: [64, 96, 128]
stages:
  - {block: convnext, depth: 3, width_mult: 1}
  - {block: convnext, depth: 3, width_mult: 2}
  - {block: convnext, depth: [9, 27], width_mult: 4}
  - {block: convnext, depth: 3, width_mult: 8}
"""
COATNET_SPACE = """
name: coatnet
image_size: 224
embed_dim: 384
stem_width: 64
base_width: [96, 128]
stages:
  - {block: mbconv_bn, depth: 2, width_mult: 1}
  - {block: mbconv_bn, depth: [3, 6], width_mult: 2}
  - {block: [rel_attention, mbconv_bn], depth: [5, 14], width_mult: 4, head_dim: 32}
  - {block: rel_attention, depth: 2, width_mult: 8, head_dim: 32}
"""


@pytest.mark.parametrize("text, name, size", [(CONVNEXT_SPACE, "ConvNeXt-T", 6), (COATNET_SPACE, "CoAtNet-0", 16)])
def test_convnext_and_coatnet_spaces_have_no_transformer_section(text, name, size):
    space = SearchSpace(yaml.safe_load(text), "families.yaml")
    assert space.transformer is None and space.size() == size
    archs = list(space.enumerate())
    assert len(archs) == size and {a.family for a in archs} >= {preset(name).family}
    assert space.contains(preset(name)) and space.sample(0).transformer is None
    assert not space.contains(preset("ViTamin-S").replace(embed_dim=384))
    assert not SearchSpace.load(REPO / "search_spaces" / "tiny.yaml").contains(preset(name).replace(embed_dim=64))
    names = {n for n, _ in space.params()}
    assert not any(n.startswith("transformer") for n in names)
    # heads apply to attention stages only, in either kind of attention
    assert ("stages.2.head_dim" in names) == (name == "CoAtNet-0")


def test_a_space_needs_a_transformer_or_stages():
    with pytest.raises(ConfigError, match="a Transformer stage, 2D stages or both") as err:
        SearchSpace({"name": "t", "image_size": 64}, "spaces/bad.yaml")
    assert err.value.field == "transformer" and err.value.source == "spaces/bad.yaml"


def test_enumerate_and_sample_respect_constraints(vitamin):
    archs = list(vitamin.enumerate())
    assert archs and all(2.0 <= cost(a).image_gmacs <= 100.0 for a in archs)
    rng = random.Random(3)
    for _ in range(50):
        arch = vitamin.sample(rng)
        assert vitamin.is_feasible(arch) and not vitamin.violations(arch)
    big = preset("ViTamin-L").replace(embed_dim=512, transformer=preset("ViTamin-L").transformer)
    assert vitamin.violations(big.replace(image_size=224)) == []
    assert any("image_gmacs" in v and "> max" in v for v in vitamin.violations(
        preset("ViTamin-L").replace(image_size=336, embed_dim=512)))


def test_sample_is_deterministic_for_a_seed(tiny):
    assert [tiny.sample(5).arch_id for _ in range(3)] == [tiny.sample(5).arch_id] * 3
    rng_a, rng_b = random.Random(11), random.Random(11)
    assert [tiny.sample(rng_a) for _ in range(10)] == [tiny.sample(rng_b) for _ in range(10)]


def test_impossible_constraints_are_reported(tiny):
    spec = yaml.safe_load((REPO / "search_spaces" / "tiny.yaml").read_text())
    spec["constraints"] = {"image_gmacs": {"min": 50}}
    with pytest.raises(ConfigError, match="no feasible arch"):
        SearchSpace(spec, "x.yaml").sample(0, max_tries=50)


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_optuna_define_by_run_is_reproducible(tiny, sampler):
    def run() -> list[str]:
        make = {"tpe": lambda: optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
                "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=0, population_size=4)}[sampler]
        directions = ["maximize"] if sampler == "tpe" else ["maximize", "minimize"]
        study = optuna.create_study(directions=directions, sampler=make())

        def objective(trial):
            arch = tiny.suggest(trial)
            c = cost(arch)
            return c.image_params if sampler == "tpe" else (c.image_params, c.image_gmacs)

        study.optimize(objective, n_trials=12)
        return [t.user_attrs["arch_id"] for t in study.trials]

    first = run()
    assert first == run() and len(set(first)) > 3


def test_suggest_records_arch_and_constraints(tiny):
    study = optuna.create_study()
    trial = study.ask()
    arch = tiny.suggest(trial)
    assert trial.user_attrs["arch_id"] == arch.arch_id
    assert trial.user_attrs["constraints"] == tiny.constraint_values(arch)
    names = set(trial.params)
    assert "stages.1.block" in names and any(n.startswith("transformer.mlp_ratio[") for n in names)


def test_space_and_its_suggest_are_picklable(tiny):
    again = pickle.loads(pickle.dumps(tiny))
    assert again.size() == tiny.size() and again.sample(1) == tiny.sample(1)
    suggest = pickle.loads(pickle.dumps(tiny.suggest))
    assert suggest(optuna.create_study().ask()).image_size in (32, 64)


BASE = {
    "name": "t", "image_size": 64, "base_width": [16], "embed_dim": 32,
    "stages": [{"block": "mbconv", "depth": 1, "width_mult": 1}],
    "transformer": {"width_mult": 4, "depth": 2, "head_dim": 32},
}


@pytest.mark.parametrize("change, field, fragment", [
    ({"colour": "red"}, "colour", "allowed: name, description"),
    ({"stages": [{"block": ["mbconv", "resnet"], "depth": 1, "width_mult": 1}]}, "stages.0.block",
     "'resnet' is not one of mbconv, convnext, attention"),
    ({"stages": [{"block": "mbconv", "depth": 1, "width": 8, "width_mult": 1}]}, "stages[0]", "exactly one of"),
    ({"stages": [{"block": "mbconv", "width_mult": 1}]}, "stages[0].depth", "missing"),
    ({"stages": [{"block": "mbconv", "depth": {"low": 3, "high": 1}, "width_mult": 1}]}, "stages.0.depth",
     "bad range"),
    ({"stages": [{"block": "mbconv", "depth": 1, "width_mult": 1, "kernel": {"by": "nope", "values": {}}}]},
     "stages.0.kernel", "earlier field"),
    ({"transformer": {"width_mult": 4, "head_dim": 32}}, "transformer.depth", "give depth"),
    ({"transformer": {"width_mult": 4, "depth": 2, "head_dim": 32, "mlp": "swiglu"}}, "transformer.mlp",
     "not one of geglu, mlp"),
    ({"constraints": {"gflops": {"max": 1}}}, "constraints.gflops", "allowed: image_gmacs"),
    ({"text": {"width": 30, "heads": 4}}, "text", "not divisible"),
    # every value's type, so that no candidate of the space fails later inside a trial
    ({"transformer": {"width_mult": 4, "depth": [2, "three", 4], "head_dim": 32}}, "transformer.depth",
     "'three' is not a positive integer; depth takes positive integers"),
    ({"image_size": "64px"}, "image_size", "'64px' is not a positive integer"),
    ({"base_width": [16, 24.5]}, "base_width", "24.5 is not a positive integer"),
    ({"stages": [{"block": "mbconv", "depth": 1, "width_mult": "one"}]}, "stages.0.width_mult",
     "'one' is not a positive number"),
    ({"stages": [{"block": "mbconv", "depth": {"low": 1, "high": "6"}, "width_mult": 1}]}, "stages.0.depth",
     "high: '6' is not a positive integer"),
    ({"stages": [{"block": "mbconv", "depth": 1, "width_mult": 1, "expansion": {"by": "block",
                                                                              "values": {"mbconv": True}}}]},
     "stages.0.expansion.values.mbconv", "True is not a positive number"),
    ({"stages": [{"block": "mbconv", "depth": 0, "width_mult": 1}]}, "stages.0.depth", "0 is not a positive integer"),
    ({"stages": [{"block": {"low": 1, "high": 2}, "depth": 1, "width_mult": 1}]}, "stages.0.block", "not a range"),
    ({"transformer": {"width_mult": 4, "depth": 2, "head_dim": 32, "mlp_ratio": [2, None]}},
     "transformer.mlp_ratio", "None is not a positive number"),
    ({"text": {"width": 64, "heads": 2, "layers": "two"}}, "text.layers", "'two' is not a positive integer"),
    ({"constraints": {"image_gmacs": {"max": "1 GMAC"}}}, "constraints.image_gmacs", "max: '1 GMAC' is not a number"),
    ({"constraints": {"train_memory_gib": {"max": 8, "batch": "big"}}}, "constraints.train_memory_gib",
     "batch: 'big' is not a positive integer"),
])
def test_bad_space_errors_name_file_and_field(change, field, fragment):
    with pytest.raises(ConfigError) as err:
        SearchSpace({**BASE, **change}, "spaces/bad.yaml")
    assert err.value.source == "spaces/bad.yaml" and err.value.field == field
    assert fragment in str(err.value)


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        SearchSpace.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nstages: [\n")
    with pytest.raises(ConfigError, match="not valid YAML: expected the node content, but found '<stream end>'") as err:
        SearchSpace.load(bad)
    assert err.value.source == str(bad) and err.value.field == "line 3, column 1"
    assert "\n" not in str(err.value)


#: The line of tiny.yaml holding the Transformer's depths (the list opens at column 10; the next line's
#: "head_dim:" cannot continue an unclosed one).
TINY_LINES = (REPO / "search_spaces" / "tiny.yaml").read_text().splitlines()
DEPTH_LINE = next(number for number, line in enumerate(TINY_LINES, 1) if line == "  depth: [2, 3, 4]")


@pytest.mark.parametrize("broken, field, message", [
    ("depth: [2, three, 4]", "transformer.depth", "'three' is not a positive integer"),
    ("depth: [2, 3, 4", f"line {DEPTH_LINE + 1}, column 11",
     "not valid YAML: expected ',' or ']', but got ':' "
     f"(while parsing a flow sequence that starts at line {DEPTH_LINE}, column 10)"),
])
def test_space_show_on_a_broken_space_exits_2_with_one_line(tmp_path, run_cli, broken, field, message):
    path = tmp_path / "space.yaml"
    path.write_text((REPO / "search_spaces" / "tiny.yaml").read_text().replace("depth: [2, 3, 4]", broken))
    run = run_cli("space", "show", path)
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.splitlines()) == 1 and run.stderr.startswith(
        f"vitamin-nas space: error: {path}: {field}: {message}"), run.stderr
