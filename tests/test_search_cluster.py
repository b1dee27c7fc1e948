"""A real two-node Ray cluster on this machine (`ray start --head` on 127.0.0.1 and a second `ray start
--address`), one CPU each: `vitamin-nas search --address` runs trials on both nodes and their results reach
the database on the driver."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest
from search_helpers import children, processes_mentioning, synthetic_data, terminate, write_study

from nas.results import ResultStore

RAY = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` command of this interpreter's Ray


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


#: Ray 2.60's `ray start` clusters authenticate with a token (~/.ray/auth_token); joining nodes and drivers say so.
TOKEN = {**os.environ, "RAY_AUTH_MODE": "token"}


@pytest.fixture
def two_nodes():
    """The cluster's address. Afterwards its processes (found by the unique temp dir on their command lines,
    and their children) are ended: `ray stop` would stop every Ray instance on the machine, others' too."""
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    address = f"127.0.0.1:{free_port()}"
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--temp-dir", temp, "--disable-usage-stats"]
    try:
        for command in ([*RAY, "start", "--head", "--port", address.split(":")[1], "--include-dashboard", "false"],
                        [*RAY, "start", "--address", address]):
            started = subprocess.run([*command, *common], capture_output=True, text=True, timeout=180, env=TOKEN)
            assert started.returncode == 0, started.stdout + started.stderr
        yield address
    finally:
        cluster = processes_mentioning(temp)
        terminate(cluster + [child for pid in cluster for child in children(pid)])
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_trials_run_on_both_nodes_of_a_cluster(two_nodes, tmp_path, tmp_path_factory, cli):
    data = synthetic_data(tmp_path_factory.getbasetemp())
    study = write_study(tmp_path, data, algorithm="random", trials=4, resources={"cpus": 1, "concurrency": 2},
                        budget={"min_samples": 64, "max_samples": 128, "early_stopping": "none"})
    out = tmp_path / "out"
    command = [*cli, "search", str(study), "--out", str(out), "--address", two_nodes]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert refused.returncode == 2 and "--address: cannot join the Ray cluster" in refused.stderr
    assert "RAY_AUTH_MODE=token" in refused.stderr
    assert not out.exists()  # nothing to --resume: the search never began
    search = subprocess.run(command, capture_output=True, text=True, timeout=600, env=TOKEN)
    assert search.returncode == 0, search.stdout[-3000:] + search.stderr[-3000:]
    store = ResultStore.open(out, readonly=True)
    trials = store.trials()
    assert len(trials) == 4 and {t["status"] for t in trials} == {"completed"}
    assert len({t["node"] for t in trials}) == 2  # both nodes trained candidates
    assert {r["node"] for r in store.rungs()} == {t["node"] for t in trials}
    assert all(len(store.rungs(t["trial_id"])) == 2 for t in trials)

