"""Shared test fixtures. Tests run on CPU with tiny shapes; they never download anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from nas.search.loopback import SINGLE_MACHINE

REPO = Path(__file__).resolve().parents[1]
# As in an activated environment: its tools on PATH, so that the commands the CLI prints name them (nas/cli/_program.py)
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
SEARCH_SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def cli() -> list[str]:
    """The installed console script, run as a real subprocess: one test per command runs it so (and the tests of
    processes: signals, kills, clusters); the others call it in process, with `run_cli`."""
    script = Path(sys.executable).with_name("vitamin-nas")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nas.cli"]


@pytest.fixture
def run_cli(capsys):
    """`vitamin-nas ARGS...` in this process (`nas.cli.main`): its exit code (argparse's exits included), stdout
    and stderr, as `subprocess.run(..., capture_output=True, text=True)` returns them."""
    from nas.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()  # what the test printed before is not the command's
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exit:  # --help, and argparse's usage errors
            code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 2
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["vitamin-nas", *map(str, args)], code, out, err)

    return run


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray's single-machine mode for every Ray a test starts in process or in a local search's subprocess: its servers
# on 127.0.0.1 only (nas/search/loopback.py). Set before any test module imports Ray; the multi-node tests start
# their nodes without it.
os.environ.setdefault(SINGLE_MACHINE, "0")


#: The modules that read `shared_search`: `make test` hands them to one worker together, so the search runs once in
#: the suite instead of once in every worker that reads it.
SHARED_SEARCH_MODULES = ("tests/test_search.py", "tests/test_search_outputs.py")


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadfile` with `SHARED_SEARCH_MODULES` as one unit of work (xdist's own scheduler otherwise)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedSearchScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = super()._split_scope(nodeid)
            return SHARED_SEARCH_MODULES[0] if module in SHARED_SEARCH_MODULES else module

    return SharedSearchScheduling(config, log)


#: Markers a test gets from the fixtures it uses: what `make test-fast` leaves out with `slow`.
FIXTURE_MARKERS = {"local_ray": "ray", "cli": "subprocess"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks each test that uses Ray in process (`local_ray`) `ray` and each that runs the console script
    (`cli`) `subprocess`. Then orders modules with the most slow tests first, each module's tests in their
    order: `make test` hands whole modules to its workers (`--dist loadfile --no-loadscope-reorder`) in this
    order, so the long ones start first and the short ones fill in behind them instead of one long module ending
    the run alone."""
    for item in items:
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
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
def design_figures(design_results) -> Path:
    """`vitamin-nas plot` run once on `design_results` (in process); the figures directory."""
    from nas.cli import main

    out = design_results / "figures"
    assert main(["plot", str(design_results), "--out", str(out)]) == 0
    return out


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 2 MB filesystem (tmpfs) mounted at tmp_path/small, for drills of a full disk; skipped with the reason
    where this process may not mount one (not root, no CAP_SYS_ADMIN, a container without it)."""
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)


# ---- Ray, once per test process ------------------------------------------------------------------------------

#: A local Ray instance on the loopback: 2 CPUs, no dashboard; `nas.search.search` uses the caller's Ray when one
#: is running, so every search of a test process runs on it.
RAY_OPTIONS = {"address": "local", "num_cpus": 2, "include_dashboard": False, "_node_ip_address": "127.0.0.1",
               "log_to_driver": False}
_ray_temps: list[str] = []


def _start_ray() -> None:
    import ray

    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    _ray_temps.append(temp)
    ray.init(**RAY_OPTIONS, _temp_dir=temp)


@pytest.fixture(scope="session")
def local_ray():
    """The test process's one Ray instance, shared by every module that searches in process (started at first use:
    a process that runs no such test starts none)."""
    import ray

    _start_ray()
    yield
    ray.shutdown()
    for temp in _ray_temps:
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def without_ray():
    """No Ray in this process during the module's tests: the shared instance, when it is up, is stopped before and
    started again after (for tests of what happens before a search starts Ray)."""
    import ray

    running = ray.is_initialized()
    if running:
        ray.shutdown()
    yield
    if running:
        _start_ray()


# ---- one small search, read by many tests ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def search_data(tmp_path_factory) -> Path:
    """The search tests' synthetic dataset (tests/search_helpers.py), written once per test process."""
    from search_helpers import synthetic_data

    return synthetic_data(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def shared_search(local_ray, search_data, tmp_path_factory):
    """One real TPE + ASHA search (Ray Tune, Optuna, SQLite, tiny towers on CPU), run once per test process for
    the tests that read what it leaves (study.db, the run directory and its checkpoints, TensorBoard runs): six
    of the space's eight archs are feasible (a GMACs limit), and the study asks for eight trials (the search ends
    when the space holds nothing new), then confirms its best candidate with one more seed (`confirm`). The study,
    its results database and the GMACs limit; readers never write to the run."""
    from search_helpers import write_study

    from nas.search import search
    from nas.study import load_study

    directory = tmp_path_factory.mktemp("shared_search")
    space = load_study(write_study(directory, search_data)).space
    gmacs = sorted(space.measures(a)["image_gmacs"] for a in space.enumerate())
    limit = (gmacs[5] + gmacs[6]) / 2
    train = {"batch_size": 32, "warmup": 1, "lr": 0.002, "checkpoint_every": 32, "log_every": 2}
    study = load_study(write_study(directory, search_data, algorithm="tpe", sampler={"n_startup_trials": 3},
                                   trials=8, train=train, constraints={"image_gmacs": {"max": limit}},
                                   confirm={"top": 1, "seeds": 1}))
    return study, search(study, directory / "out"), limit
