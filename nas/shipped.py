"""The studies and search spaces that ship with vitamin-nas, found the same way in a checkout and after a plain
`pip install` from any directory.

The repository's `studies/` and `search_spaces/` are installed as package data under `nas/share/` (in a checkout,
`nas/share/` holds links to them), so a shipped study's relative paths keep working where it is installed: its
space (`space: ../search_spaces/tiny.yaml`) and arch files (`archs/*.json`) sit beside it there as in the
repository.

Its data directory does not go into the installed package (site-packages is no place for datasets and may not be
writable): the `data.dir` of an installed study resolves as if the study sat in a `studies/` folder of the
current directory, so `dir: ../data/quickstart` is `./data/quickstart`, where `make quickstart` in a checkout
puts it too. In a checkout, the study's own folder stays the base, as for any study file.
"""

from __future__ import annotations

import os
from pathlib import Path

from nas.errors import ConfigError

SHARE = Path(__file__).resolve().parent / "share"
STUDIES = SHARE / "studies"
SPACES = SHARE / "search_spaces"
#: Where the paper's numbers and claims are (`nas.report.paper`).
PAPER = STUDIES / "paper" / "vitamin.yaml"


def studies() -> dict[str, Path]:
    """Every shipped study by name (its file's stem)."""
    return {path.stem: path for path in sorted(STUDIES.glob("*.yaml"))}


def spaces() -> dict[str, Path]:
    """Every shipped search space by name (its file's stem)."""
    return {path.stem: path for path in sorted(SPACES.glob("*.yaml"))}


def study_file(spec: str | os.PathLike) -> Path:
    """A study file: `spec` itself when it is a file, else the shipped study of that name (`quickstart`, or the
    repository's path of it, `studies/quickstart.yaml`, where no checkout is)."""
    return _file(spec, studies(), "studies", "study")


def space_file(spec: str | os.PathLike) -> Path:
    """A search space file: `spec` itself when it is a file, else the shipped space of that name (`tiny`, or
    `search_spaces/tiny.yaml` where no checkout is)."""
    return _file(spec, spaces(), "search_spaces", "search space")


def _file(spec: str | os.PathLike, shipped: dict[str, Path], folder: str, what: str) -> Path:
    path = Path(spec)
    if path.is_file():
        return path
    if str(spec) in shipped:
        return shipped[str(spec)]
    if path.parent.name == folder and path.suffix == ".yaml" and path.stem in shipped:
        return shipped[path.stem]
    raise ConfigError(f"no such {what} file, nor a shipped {what} of that name (shipped: {', '.join(shipped)})",
                      source=str(spec))


def installed(path: str | os.PathLike) -> bool:
    """Whether `path` is a file of the installed package data (in a checkout, the links lead out of `nas/`)."""
    return Path(path).resolve().is_relative_to(SHARE)


def data_base(study: str | os.PathLike) -> Path:
    """What a study's relative `data.dir` is relative to: its folder, or for an installed study `./studies`."""
    return Path.cwd() / "studies" if installed(study) else Path(study).resolve().parent
