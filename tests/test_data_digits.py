"""scikit-learn's handwritten digits as a captioned dataset: written in DataComp's layout, read back through the
training stream and the zero-shot reader, and learned: real images that no one here drew.

The learning test trains a tiny ViTamin-shaped tower from scratch on the 1,253 training digits, captioned from
the dataset's own templates (numerals and words mixed: "a photo of the number 7", "handwritten seven"), and
classifies the 544 held-out digits zero-shot with the prompts of the set ("a handwritten digit seven.", ...).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from nas.arch import Arch, Stage, Transformer
from nas.data import DataSource, stream, zeroshot_set
from nas.data.digits import CAPTION_TEMPLATES, CLASSNAMES, write_digits
from nas.errors import ConfigError
from nas.presets import TextTower
from nas.train import train
from nas.train_config import TrainConfig

DIGITS = load_digits()


def files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    record = write_digits(root, size=32, seed=0, held_out=0.3)
    return root, record


def test_every_digit_is_in_exactly_one_split_with_the_held_out_share_of_its_class(digits):
    root, record = digits
    metadata = pq.read_table(root / "metadata").to_pandas()
    assert list(metadata.columns[:4]) == ["uid", "label", "classname", "caption"]
    held_out = {int(p.stem): int(p.parent.name.split("_")[0]) for p in (root / "eval" / "zeroshot").glob("*/*.png")}
    trained = set(metadata["sklearn_index"])
    assert len(trained) == len(metadata) == record["train_samples"] == 1253
    assert len(held_out) == record["zeroshot_images"] == 544
    assert trained.isdisjoint(held_out) and trained | set(held_out) == set(range(1797))
    for label in range(10):
        in_class = int((DIGITS.target == label).sum())
        assert sum(1 for v in held_out.values() if v == label) == int(np.ceil(0.3 * in_class))
    assert all(DIGITS.target[i] == label for i, label in held_out.items())
    assert (DIGITS.target[metadata["sklearn_index"]] == metadata["label"]).all()
    assert json.loads((root / "shards" / "sizes.json").read_text()) == {"00000000.tar": 500, "00000001.tar": 500,
                                                                         "00000002.tar": 253}


def test_captions_name_their_digit_in_several_phrasings(digits):
    root, _ = digits
    metadata = pq.read_table(root / "metadata").to_pandas()
    phrasings = {re.compile(re.escape(template).replace(r"\{name\}", "(?P<name>[a-z]+)")
                            .replace(r"\{digit\}", "(?P<digit>[0-9])")) for template in CAPTION_TEMPLATES}
    used = set()
    for label, caption in zip(metadata["label"], metadata["caption"]):
        match = next(m for m in (p.fullmatch(caption) for p in phrasings) if m)
        said = match.groupdict()
        assert said.get("name", CLASSNAMES[label]) == CLASSNAMES[label] and said.get("digit", str(label)) == str(label)
        used.add(match.re)
    assert used == phrasings


def test_the_stream_and_the_zero_shot_reader_read_them_back(digits):
    root, record = digits
    loader, stats = stream(str(root / "shards"), batch_size=100, image_size=32, train=False, workers=0)
    uids = [uid for _, _, batch_uids in loader for uid in batch_uids]
    assert len(set(uids)) == len(uids) == record["train_samples"] and not stats.skipped
    zeroshot = zeroshot_set(root / "eval" / "zeroshot", 32)
    assert zeroshot.classnames == list(CLASSNAMES)
    assert "a handwritten digit {}." in zeroshot.templates
    assert len(zeroshot.dataset) == record["zeroshot_images"]
    assert [name.split("_")[1] for name in zeroshot.dataset.classes] == list(CLASSNAMES)


def test_images_are_the_digits_dark_on_white(tmp_path):
    """At 8 px the image is the 8x8 digit itself, ink 0-16 mapped to 255-0."""
    write_digits(tmp_path, size=8)
    path = next((tmp_path / "eval" / "zeroshot").glob("*/*.png"))
    pixels = np.asarray(Image.open(path))
    expected = np.rint(255 - DIGITS.images[int(path.stem)] * 255 / 16)
    np.testing.assert_array_equal(pixels, expected)
    with tarfile.open(tmp_path / "shards" / "00000000.tar") as tar:
        members = tar.getmembers()
        assert {m.name.rsplit(".", 1)[1] for m in members} == {"png", "txt", "json"}
        image = Image.open(io.BytesIO(tar.extractfile(members[0]).read()))
    assert (image.format, image.size) == ("PNG", (8, 8))


def test_same_seed_same_bytes_and_a_rerun_keeps_the_set(tmp_path):
    first = write_digits(tmp_path / "a", size=8, seed=3)
    write_digits(tmp_path / "b", size=8, seed=3)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    write_digits(tmp_path / "c", size=8, seed=4)
    assert sorted(files(tmp_path / "c")) != sorted(files(tmp_path / "a"))  # another split
    before = files(tmp_path / "a")
    assert write_digits(tmp_path / "a", size=8, seed=3) == first
    assert files(tmp_path / "a") == before
    with pytest.raises(ConfigError, match="digits.json.*other settings"):
        write_digits(tmp_path / "a", size=8, seed=5)


@pytest.mark.parametrize(("settings", "field"), [({"held_out": 1.0}, "held_out"), ({"size": 4}, "size"),
                                                 ({"samples_per_shard": 0}, "samples_per_shard")])
def test_bad_settings_name_their_field(tmp_path, settings, field):
    with pytest.raises(ConfigError, match=field):
        write_digits(tmp_path, **settings)


def test_digits_command(tmp_path, run_cli):
    run = run_cli("data", "digits", "--out", tmp_path / "d", "--size", "16")
    assert run.returncode == 0, run.stderr
    assert "wrote 1253 digits in 3 shards" in run.stdout and "(10 classes, 544 images)" in run.stdout


@pytest.mark.subprocess
def test_digits_command_without_scikit_learn_names_the_extra(tmp_path):
    block = "import sys; sys.modules['sklearn'] = None; from nas.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run([sys.executable, "-c", block, "data", "digits", "--out", str(tmp_path / "d")],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip() == ("vitamin-nas data: error: needs scikit-learn, which is not installed: "
                                  "pip install 'vitamin-nas[digits]'")


#: conv stem, one MBConv stage, a 2-block Transformer stage: 4x4 tokens at 32 px
ARCH = Arch(stem="conv", stem_width=16, stages=(Stage("mbconv", 1, 32),),
            transformer=Transformer(width=64, depth=2, heads=2), image_size=32, embed_dim=64)
TEXT = TextTower(width=64, layers=2, heads=2, context_length=16)
CHANCE = 1 / 10


@pytest.mark.slow
def test_a_tiny_tower_learns_real_handwritten_digits_zero_shot(digits, tmp_path, one_thread):
    """One torch thread, the loader worker on the other core: on a shared 2-core machine two threads
    spin against each other (measured: 4x the CPU time, same result)."""
    root, _ = digits
    config = TrainConfig(samples=3200, batch_size=16, lr=1e-3, warmup=20, rungs=(1600,), log_every=50,
                         checkpoint_every=0, workers=1)
    result = train(ARCH, TEXT, DataSource(str(root / "shards")), config, out=tmp_path / "run",
                   zeroshot=zeroshot_set(root / "eval" / "zeroshot", 32), device="cpu")
    top1 = [r["zeroshot_top1"] for r in result.rungs]
    train_s = sum(r["train_s"] for r in result.rungs)
    print(f"zero-shot top-1 on 544 held-out digits {top1[-1]:.1%} ({top1[-1] / CHANCE:.1f}x chance; {top1[0]:.1%} "
          f"halfway) after {result.samples_seen} samples: {train_s:.0f} s of training, {result.wall_s:.0f} s wall")
    assert result.status == "completed"
    assert top1[-1] >= 3 * CHANCE
