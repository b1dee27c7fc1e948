"""The studies and search spaces ship inside the package: a wheel holds every one, and an installed copy runs them
from any directory, with their relative paths intact and their data under the current directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nas import shipped

REPO = Path(__file__).resolve().parents[1]
#: What a wheel is built from (the rest of a checkout is not part of the package).
SOURCES = ("pyproject.toml", "README.md", "nas", "plots", "studies", "search_spaces")


def data_files() -> list[str]:
    """Every study, arch and space file of the repository, as the package ships it (under nas/share/)."""
    files = [*REPO.glob("studies/**/*.yaml"), *REPO.glob("studies/**/*.json"), *REPO.glob("search_spaces/*.yaml")]
    return sorted(f"nas/share/{path.relative_to(REPO)}" for path in files)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The package as `pip wheel` builds it (in an isolated build environment, as `pip install` does)."""
    root = tmp_path_factory.mktemp("wheel")
    (root / "src").mkdir()
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / "src" / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, root / "src" / name)
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"),
                          str(root / "src")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return next((root / "dist").glob("vitamin_nas-*.whl"))


@pytest.mark.slow
def test_the_wheel_holds_every_study_space_and_arch_file(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert data_files() and set(data_files()) <= set(names)
    assert "nas/share/studies/quickstart.yaml" in names and "nas/share/studies/paper/vitamin.yaml" in names
    assert "nas/shipped.py" in names and "nas/cli/studies.py" in names


@pytest.mark.slow
def test_an_installed_package_runs_its_studies_from_any_directory(wheel, tmp_path):
    """Installed (not a checkout), from a directory that is not the repository's: `studies` lists what ships, a
    shipped study finds its space and arch files beside it, and its data goes to ./data."""
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = """
import json, sys
import nas
from nas import shipped
from nas.cli import main
from nas.study import Study, load_study
main(["studies"])
quickstart, scaling = load_study(shipped.study_file("quickstart")), load_study(shipped.study_file("model_scaling"))
print(json.dumps({"nas": nas.__file__, "installed": shipped.installed(quickstart.source),
                  "space": quickstart.space.source, "data_dir": quickstart.data.dir, "archs": len(scaling.archs),
                  "scaling_data_dir": scaling.data.dir}))
"""
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    *table, last = run.stdout.strip().splitlines()
    found = json.loads(last)
    assert Path(found["nas"]).is_relative_to(site) and found["installed"]
    assert Path(found["space"]) == site / "nas" / "share" / "search_spaces" / "tiny.yaml"
    assert Path(found["data_dir"]) == elsewhere.resolve() / "data" / "quickstart"
    assert found["archs"] == 5
    assert Path(found["scaling_data_dir"]) == elsewhere.resolve() / "data" / "vitamin_proxy_simple"  # its base's
    listed = "\n".join(table)
    for name in shipped.studies():
        assert f"\n{name} " in listed
    assert f"{site / 'nas' / 'share' / 'search_spaces' / 'vitamin.yaml'}" in listed

    version = subprocess.run([sys.executable, "-m", "nas.cli", "--version"], cwd=elsewhere, env=env,
                             capture_output=True, text=True)
    assert version.stdout.strip() == f"vitamin-nas {shipped_version(site)}"


def shipped_version(site: Path) -> str:
    return next(site.glob("vitamin_nas-*.dist-info")).name.removeprefix("vitamin_nas-").removesuffix(".dist-info")


def test_in_a_checkout_a_shipped_study_keeps_its_data_beside_the_repository(tmp_path, monkeypatch):
    from nas.study import load_study

    monkeypatch.chdir(tmp_path)
    study = load_study(shipped.study_file("quickstart"))
    assert not shipped.installed(study.source)
    assert Path(study.data.dir) == REPO / "data" / "quickstart"
    assert set(shipped.studies()) == {p.stem for p in (REPO / "studies").glob("*.yaml")}


def test_an_unknown_study_names_the_shipped_ones(tmp_path):
    from nas.errors import ConfigError

    with pytest.raises(ConfigError, match="nor a shipped study of that name .shipped: data_scaling, model_scaling"):
        shipped.study_file(str(tmp_path / "nope.yaml"))


def test_a_study_names_a_shipped_space(tmp_path):
    from search_helpers import write_study

    from nas.study import load_study

    study = load_study(write_study(tmp_path, tmp_path / "data", space="tiny"))
    assert Path(study.space.source) == shipped.spaces()["tiny"] and study.space.size() == 864


def test_printed_commands_name_the_environments_tools_as_they_run(tmp_path, monkeypatch):
    """On PATH (an activated environment), a tool by its name; otherwise (`make quickstart` runs .venv/bin/vitamin-nas
    without activating .venv) by its path, relative to the working directory below which it is."""
    from nas.cli._program import executable

    bin_dir = Path(sys.executable).parent
    assert executable() == "vitamin-nas" and executable("tensorboard") == "tensorboard"
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # a working directory the environment is not below: the absolute path
    assert executable() == str(bin_dir / "vitamin-nas")
    monkeypatch.chdir(bin_dir.parent.parent)
    assert executable("tensorboard") == f"{bin_dir.parent.name}/bin/tensorboard"
    assert subprocess.run([executable(), "--version"], capture_output=True).returncode == 0  # it runs as printed
    assert executable("no-such-tool") == "no-such-tool"


def test_shipped_names_work_wherever_a_space_or_study_is_taken(tmp_path, monkeypatch, run_cli):
    """By name, and by the repository's path where there is no checkout (after `pip install`, the README's own
    `space show search_spaces/vitamin.yaml`); a missing file of another name is still an error."""
    from nas.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    assert shipped.space_file("search_spaces/vitamin.yaml") == shipped.spaces()["vitamin"]
    assert shipped.study_file("studies/quickstart.yaml") == shipped.studies()["quickstart"]
    with pytest.raises(ConfigError, match="no such search space file, nor a shipped search space"):
        shipped.space_file("spaces/vitamin.yaml")
    run = run_cli("space", "show", "tiny", "--samples", "50")
    assert run.returncode == 0 and "864" in run.stdout.replace(",", "")
    run = run_cli("space", "sample", "search_spaces/tiny.yaml", "-n", "2")
    assert run.returncode == 0 and len(run.stdout.strip().splitlines()) >= 2
