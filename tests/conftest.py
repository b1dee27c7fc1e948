"""Shared test fixtures. Tests run on CPU with tiny shapes; they never download anything."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEARCH_SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def cli() -> list[str]:
    """The installed console script, run as a real subprocess."""
    script = Path(sys.executable).with_name("vitamin-nas")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nas.cli"]


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with the most slow tests first, each module's tests in their order: `make test` hands whole
    modules to its workers (`--dist loadfile --no-loadscope-reorder`) in this order, so the long ones start
    first and the short ones fill in behind them instead of one long module ending the run alone."""
    slow = Counter(item.module.__name__ for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.module.__name__])


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (as a 1-CPU worker runs), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def design_results(tmp_path_factory) -> Path:
    """A results database of the design-choice study whose metrics follow known laws (tests/study_helpers.py)."""
    from study_helpers import write_design_results

    directory = tmp_path_factory.mktemp("design_study")
    write_design_results(directory).close()
    return directory


@pytest.fixture(scope="session")
def design_figures(design_results, cli) -> Path:
    """`vitamin-nas plot` run once on `design_results` (a real subprocess); the figures directory."""
    import subprocess

    out = design_results / "figures"
    run = subprocess.run([*cli, "plot", str(design_results), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return out
