"""The synthetic captioned dataset: DataComp's format, deterministic, captions that describe the pixels."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from nas.data import SynthConfig, filter_metadata, retrieval_set, stream, synthesize, zeroshot_set
from nas.data.synth import COLORS, SHAPES, ZEROSHOT_TEMPLATES
from nas.errors import ConfigError

pytestmark = pytest.mark.timeout(180)

TINY = {"samples": 90, "size": 32, "samples_per_shard": 40, "zeroshot_per_class": 1, "retrieval_samples": 12}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    synthesize(out, SynthConfig(seed=7, workers=2, **TINY))
    return out


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_datacomps(synthetic):
    shards = sorted((synthetic / "shards").glob("*.tar"))
    assert [p.name for p in shards] == ["00000000.tar", "00000001.tar", "00000002.tar"]
    assert json.loads((synthetic / "shards" / "sizes.json").read_text()) == {
        "00000000.tar": 40, "00000001.tar": 40, "00000002.tar": 10}
    metadata = pd.read_parquet(synthetic / "metadata")
    assert len(metadata) == 90 and metadata.uid.is_unique
    assert metadata.uid.str.fullmatch(r"[0-9a-f]{32}").all()
    assert {"clip_b32_similarity_score", "clip_l14_similarity_score", "text", "original_width"} <= set(metadata)
    record = json.loads((synthetic / "synth.json").read_text())
    assert record["complete"] and record["train_samples"] == 90


def test_same_seed_same_bytes_whatever_the_process_count(synthetic, tmp_path):
    synthesize(tmp_path / "again", SynthConfig(seed=7, workers=1, **TINY))
    assert files(tmp_path / "again") == files(synthetic)
    synthesize(tmp_path / "other", SynthConfig(seed=8, workers=1, **TINY))
    assert files(tmp_path / "other")["shards/00000000.tar"] != files(synthetic)["shards/00000000.tar"]


def test_captions_describe_the_scene(synthetic):
    metadata = pd.read_parquet(synthetic / "metadata")
    matching = metadata[metadata.caption_matches]
    assert 0.75 < len(matching) / len(metadata) < 1.0  # 10 % noise by default
    for row in matching.itertuples():
        assert row.color in row.text, row.text
        assert row.shape in row.text or (row.shape == "cross" and "crosses" in row.text), row.text
    assert matching.text.nunique() > 0.8 * len(matching)  # varied phrasing, not one template
    noisy = metadata[~metadata.caption_matches]
    assert noisy.clip_l14_similarity_score.max() < matching.clip_l14_similarity_score.min() + 0.1


def test_score_filter_removes_most_noise(synthetic):
    kept = filter_metadata(synthetic / "metadata", "clip_l14_similarity_score >= 0.22")
    metadata = pd.read_parquet(synthetic / "metadata").set_index("uid")
    assert metadata.loc[[u for u in metadata.index if u in kept], "caption_matches"].mean() > 0.95


def test_zeroshot_images_show_their_class_colour(synthetic):
    zs = zeroshot_set(synthetic / "eval" / "zeroshot", image_size=32)
    assert len(zs.classnames) == len(COLORS) * len(SHAPES) == len(zs.dataset)
    assert zs.templates == list(ZEROSHOT_TEMPLATES)
    for path, label in zs.dataset.samples:
        color, shape = zs.classnames[label].split()
        assert Path(path).parent.name == f"{color}_{shape}"
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=float).reshape(-1, 3)
        closest = np.linalg.norm(pixels - COLORS[color], axis=1).min()
        assert closest < 60, (path, closest)


def test_retrieval_set_has_five_captions_per_image(synthetic):
    rs = retrieval_set(str(synthetic / "eval" / "retrieval"), image_size=32)
    assert len(rs.images) == 12 and len(rs.texts) == 60
    assert all(len(texts) == 5 for texts in rs.image_to_texts)
    assert rs.images[0].shape == (3, 32, 32)


def test_the_stream_reads_the_synthetic_shards(synthetic):
    loader, stats = stream(str(synthetic / "shards"), batch_size=16, image_size=32, samples=64, workers=2)
    assert sum(len(batch.uids) for batch in loader) == 64 and stats.total_skipped == 0
    assert stats.dataset_samples == 90


def test_a_rerun_resumes_and_other_settings_are_refused(synthetic, tmp_path):
    out = tmp_path / "partial"
    synthesize(out, SynthConfig(seed=7, workers=1, **TINY))
    (out / "shards" / "00000001.tar").unlink()  # as if killed before this shard
    synthesize(out, SynthConfig(seed=7, workers=1, **TINY))
    assert files(out) == files(synthetic)
    with pytest.raises(ConfigError, match="other settings"):
        synthesize(out, SynthConfig(seed=8, **TINY))
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        synthesize(tmp_path / "occupied", SynthConfig(**TINY))


def test_a_study_refuses_a_data_dir_synthesized_with_other_settings(synthetic, tmp_path):
    from nas.search.driver import prepare_data
    from nas.study import Study, load_study

    data = tmp_path / "data"
    shutil.copytree(synthetic, data)
    before = files(data)

    def study(**synth) -> Study:
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump({
            "name": "t", "space": str(Path(__file__).resolve().parents[1] / "search_spaces" / "tiny.yaml"),
            "data": {"synthetic": {**TINY, "seed": 7, **synth}, "dir": "data"}, "objectives": {"zeroshot_top1": "max"},
            "trials": 2, "budget": {"min_samples": 40, "max_samples": 80}, "train": {"batch_size": 8, "warmup": 1}}))
        return load_study(path)

    prepare_data(study(workers=2))  # the same dataset (workers change only the speed): used as it is
    for change, difference in (({"seed": 8}, "seed 7 (written) vs 8 (asked)"),
                               ({"samples": 120}, "samples 90 (written) vs 120 (asked)")):
        with pytest.raises(ConfigError, match=re.escape(difference)) as info:
            prepare_data(study(**change))
        assert info.value.source == str(tmp_path / "study.yaml") and info.value.field == "data.synthetic"
        assert f"delete {data}" in str(info.value)
    assert files(data) == before  # neither used nor overwritten


def test_synth_command(tmp_path, cli, run_cli):
    """The `data` command's one run as a real subprocess (the others run in process)."""
    out = tmp_path / "cli"
    result = subprocess.run([*cli, "data", "synth", "--out", str(out), "--samples", "30", "--size", "24",
                             "--seed", "1", "--zeroshot-per-class", "0", "--retrieval-samples", "5"],
                            capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stderr
    assert "wrote 30 samples in 1 shards" in result.stdout and "synthesizing" in result.stderr
    assert (out / "shards" / "00000000.tar").exists() and not (out / "eval" / "zeroshot" / "classnames.txt").exists()
    bad = run_cli("data", "synth", "--out", tmp_path / "bad", "--size", "4")
    assert bad.returncode == 2 and "size" in bad.stderr
