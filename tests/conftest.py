"""Shared test fixtures. Tests run on CPU with tiny shapes; they never download anything."""

from __future__ import annotations

import os
import sys
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
