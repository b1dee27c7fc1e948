"""Every JSON the command line writes about an arch reads back in every command that takes an arch file:
`arch --json`, a line of `space sample --json`, an export's arch.json and a selection's tower.json, each read by
`vitamin-nas arch`, `train --arch` and a study's `archs`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from search_helpers import write_study
from train_helpers import TINY_ARCH, TINY_TEXT

from nas.arch import Arch
from nas.cli import build_parser, main
from nas.presets import load_arch
from nas.study import load_study

REPO = Path(__file__).resolve().parents[1]


def written_by(writer: str, directory: Path, capsys) -> tuple[Path, Arch]:
    """An arch file as `writer` writes it, and the arch it holds."""
    path = directory / "arch.json"
    if writer == "arch --json":
        (directory / "tiny.json").write_text(TINY_ARCH.to_json())
        assert main(["arch", str(directory / "tiny.json"), "--json"]) == 0
        path.write_text(capsys.readouterr().out)
        return path, TINY_ARCH
    if writer == "space sample --json":
        assert main(["space", "sample", str(REPO / "search_spaces" / "tiny.yaml"), "-n", "3", "--json"]) == 0
        line = capsys.readouterr().out.splitlines()[1]
        path.write_text(line)
        return path, Arch.from_dict(json.loads(line)["arch"])
    if writer == "export":
        from nas.export import ARCH_FILE, export
        from nas.models import build_clip

        export(build_clip(TINY_ARCH, TINY_TEXT).state_dict(), TINY_ARCH, TINY_TEXT, directory)
        return directory / ARCH_FILE, TINY_ARCH
    from nas.select import TOWER_FILE, write_model_config

    write_model_config(TINY_ARCH, TINY_TEXT, directory)
    return directory / TOWER_FILE, TINY_ARCH


WRITERS = ("arch --json", "space sample --json", "export", "select")


@pytest.mark.parametrize("writer", WRITERS)
def test_every_arch_file_reads_back_in_every_command(writer, tmp_path, capsys):
    path, arch = written_by(writer, tmp_path, capsys)
    assert load_arch(str(path))[0] == arch

    assert main(["arch", str(path), "--json"]) == 0  # vitamin-nas arch FILE
    assert json.loads(capsys.readouterr().out)["arch_id"] == arch.arch_id

    from nas.cli.train import run_settings  # vitamin-nas train --arch FILE (and --model FILE)

    args = build_parser("train").parse_args(["train", "--model", str(path), "--data", "shards/", "--samples", "64",
                                             "--batch-size", "16", "--warmup", "1", "--out", str(tmp_path / "run")])
    assert run_settings(args)[0] == arch

    study = load_study(write_study(tmp_path / "study", tmp_path / "data", algorithm="fixed",
                                   archs={"candidate": str(path)}))
    assert study.archs == (arch,) and study.labels == ("candidate",)


def test_an_arch_file_keeps_its_text_tower(tmp_path, capsys):
    """What `arch --json`, `space sample --json` and an export write carries the text tower: `train --model FILE`
    trains with it."""
    from nas.presets import preset_with_text
    from nas.space import SearchSpace

    assert main(["arch", "ViTamin-S", "--json"]) == 0
    (tmp_path / "s.json").write_text(capsys.readouterr().out)
    assert load_arch(str(tmp_path / "s.json")) == preset_with_text("ViTamin-S")
    sampled, _ = written_by("space sample --json", tmp_path, capsys)
    assert load_arch(str(sampled))[1] == SearchSpace.load(REPO / "search_spaces" / "tiny.yaml").text
    exported, _ = written_by("export", tmp_path / "export", capsys)
    assert load_arch(str(exported))[1] == TINY_TEXT
