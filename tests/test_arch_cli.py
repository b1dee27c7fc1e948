"""`vitamin-nas arch` and `vitamin-nas space`: each command once as a real subprocess, the rest in process
(`run_cli`)."""

from __future__ import annotations

import json
import subprocess

import pytest


def run(cli: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [[], ["arch"], ["space"], ["space", "show"], ["space", "sample"]])
def test_help(run_cli, args):
    out = run_cli(*args, "--help")
    assert out.returncode == 0 and "usage: vitamin-nas" in out.stdout


def test_arch_table_matches_paper(cli):
    out = run(cli, "arch", "ViTamin-S")
    assert out.returncode == 0, out.stderr
    assert "C64x2-C128x4-T384x14h6-geglu@224" in out.stdout
    assert "stage2:mbconv" in out.stdout and "transformer:geglu" in out.stdout
    assert "image_params_m: 22.03" in out.stdout and "image_gmacs (paper): 5.502" in out.stdout


def test_arch_from_json_file_and_json_output(run_cli, tmp_path):
    out = run_cli("arch", "ViTamin-B", "--json")
    data = json.loads(out.stdout)
    path = tmp_path / "cand.json"
    path.write_text(json.dumps(data["arch"]))
    again = json.loads(run_cli("arch", path, "--json").stdout)
    assert again["arch_id"] == data["arch_id"] and again["cost"]["image_params_m"] == pytest.approx(87.525248)


def test_arch_list(run_cli):
    out = run_cli("arch", "--list")
    for name in ("ViTamin-XL-384", "ViT-L-14", "ConvNeXtHybrid-B", "CoAtNetHybrid-2"):
        assert name in out.stdout


def test_arch_errors_exit_2(run_cli, tmp_path):
    out = run_cli("arch", "ViTamin-Q")
    assert out.returncode == 2 and "unknown preset 'ViTamin-Q'" in out.stderr and "ViTamin-S" in out.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stem_width": 16, "transformer": {"width": 60, "depth": 2, "heads": 7}}))
    out = run_cli("arch", bad)
    assert out.returncode == 2 and str(bad) in out.stderr and "transformer.heads" in out.stderr
    assert run_cli("arch", tmp_path / "none.json").returncode == 2


def test_space_show(cli, repo):
    out = run(cli, "space", "show", str(repo / "search_spaces" / "tiny.yaml"))
    assert out.returncode == 0, out.stderr
    assert "size: 864 combinations" in out.stdout and "all 864 feasible" in out.stdout
    assert "image GMACs (paper)" in out.stdout and "transformer.mlp_ratio[geglu]" in out.stdout


def test_space_sample_json_is_deterministic_and_constrained(run_cli, repo):
    args = ["space", "sample", str(repo / "search_spaces" / "vitamin.yaml"), "-n", "6", "--seed", "4",
            "--max-gmacs", "10", "--json"]
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0, first.stderr
    rows = [json.loads(line) for line in first.stdout.splitlines()]
    assert first.stdout == second.stdout and len(rows) == 6 and len({r["arch_id"] for r in rows}) == 6
    assert all(2.0 <= r["image_gmacs"] <= 10 for r in rows)
    table = run_cli("space", "sample", repo / "search_spaces" / "tiny.yaml", "-n", "3")
    assert table.returncode == 0 and "arch_id" in table.stdout and len(table.stdout.splitlines()) == 5


def test_space_errors_exit_2(run_cli, tmp_path):
    bad = tmp_path / "space.yaml"
    bad.write_text("name: x\ntransformer: {width: 64, depth: 2, heads: 2, mlp: [geglu, swiglu]}\n")
    out = run_cli("space", "show", bad)
    assert out.returncode == 2
    assert str(bad) in out.stderr and "transformer.mlp" in out.stderr and "geglu, mlp" in out.stderr
    assert run_cli("space", "show", tmp_path / "missing.yaml").returncode == 2
