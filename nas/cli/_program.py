"""How the commands the CLI prints name the tools of its environment, so that they run as printed.

`vitamin-nas`, `tensorboard` and `optuna-dashboard` are installed beside the Python that runs the CLI (`.venv/bin`
after `make install`). An activated environment has them on PATH: their names run as printed. Otherwise (`make
quickstart` runs `.venv/bin/vitamin-nas` without activating .venv) a bare name gives "command not found", so the
printed command names the file itself, relative to the working directory when it is below it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def executable(tool: str = "vitamin-nas") -> str:
    """`tool` as a command to print: its name when that runs this environment's (or there is no such file
    here), else its path (`.venv/bin/vitamin-nas`)."""
    here = Path(sys.executable).parent / tool
    found = shutil.which(tool)
    if not here.is_file() or (found is not None and Path(found).resolve() == here.resolve()):
        return tool
    try:
        return str(here.relative_to(Path.cwd()))
    except ValueError:
        return str(here)
