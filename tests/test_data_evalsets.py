"""Zero-shot sets from class folders (ImageNet synsets included) and retrieval sets from shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from data_helpers import sample, uid, write_tar
from PIL import Image

from nas.data import retrieval_set, zeroshot_set
from nas.errors import ConfigError


def class_folders(root, names, per_class=2):
    for label, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((20, 30, 3), 40 * label + i, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_plain_class_folders(tmp_path):
    zs = zeroshot_set(class_folders(tmp_path / "val", ["red_apple", "green_pear"]), image_size=16)
    assert zs.classnames == ["green pear", "red apple"]  # labels follow the sorted folder order
    assert zs.templates == ["a photo of a {}."]
    image, label = zs.dataset[0]
    assert image.shape == (3, 16, 16) and label == 0 and len(zs.dataset) == 4


def test_imagenet_synset_folders_get_open_clips_names_and_templates(tmp_path):
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    zs = zeroshot_set(class_folders(tmp_path / "val", ["n01443537", "n01440764"]), image_size=16)
    assert zs.classnames == ["tench", "goldfish"]
    assert len(zs.templates) == len(OPENAI_IMAGENET_TEMPLATES) and zs.templates[0] == "a bad photo of a {}."
    with pytest.raises(ConfigError, match="not ImageNet-1k synsets"):
        zeroshot_set(class_folders(tmp_path / "bad", ["n00000000"]), image_size=16)


def test_names_and_templates_files(tmp_path):
    root = class_folders(tmp_path / "val", ["a", "b"])
    (root / "classnames.txt").write_text("first class\nsecond class\n")
    (root / "templates.txt").write_text("a photo of the {}.\nthe {}, drawn.\n")
    zs = zeroshot_set(root, image_size=16)
    assert zs.classnames == ["first class", "second class"]
    assert zs.templates == ["a photo of the {}.", "the {}, drawn."]
    (root / "templates.txt").write_text("a photo.\n")
    with pytest.raises(ConfigError, match=r"templates.txt.*line 1"):
        zeroshot_set(root, image_size=16)
    (root / "templates.txt").unlink()
    (root / "classnames.txt").write_text("only one\n")
    with pytest.raises(ConfigError, match="1 names for 2 class folders"):
        zeroshot_set(root, image_size=16)


def test_missing_or_empty_directories_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        zeroshot_set(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no class folders"):
        zeroshot_set(tmp_path / "empty")


def test_a_corrupt_eval_image_names_its_file(tmp_path):
    root = class_folders(tmp_path / "val", ["a"])
    (root / "a" / "broken.png").write_bytes(b"\x89PNG broken")
    zs = zeroshot_set(root, image_size=16)
    with pytest.raises(ConfigError, match="broken.png"):
        [zs.dataset[i] for i in range(len(zs.dataset))]


def test_retrieval_pairs_from_shards(tmp_path):
    captions = json.dumps({"uid": uid(1), "captions": ["first caption", "second caption", ""]}).encode()
    members = sample(0) + sample(1, json=captions) + sample(2, txt=b"") + sample(3)
    write_tar(tmp_path / "00000000.tar", members)
    rs = retrieval_set(str(tmp_path), image_size=16)
    assert rs.texts == ["caption of sample 0", "first caption", "second caption", "caption of sample 3"]
    assert rs.text_to_image == [0, 1, 1, 2]
    assert rs.image_to_texts == [[0], [1, 2], [3]]
    assert rs.skipped == {"empty_caption": 1}
    assert isinstance(rs.images[2], torch.Tensor) and rs.images[2].shape == (3, 16, 16)
    assert len(retrieval_set(str(tmp_path), image_size=16, max_images=2).images) == 2
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.tar").write_bytes(b"junk" * 200)
    with pytest.raises(ConfigError, match="no readable image-caption pair"):
        retrieval_set(str(tmp_path / "junk"))
