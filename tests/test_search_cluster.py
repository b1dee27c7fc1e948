"""A real two-node Ray cluster on this machine, one CPU each, built by the SLURM recipe's node script
(docs/cluster/slurm/ray-node.sh: `ray start --head` on 127.0.0.1 and a second `ray start --address`) from SLURM's
variables, set here by hand: its `vitamin-nas search --address` runs trials on both nodes and their results
reach the database on the driver; a driver without the cluster's token authentication is refused."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from search_helpers import children, processes_mentioning, synthetic_data, terminate, write_study

from nas.results import ResultStore
from nas.search.loopback import SINGLE_MACHINE


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SLURM = Path(__file__).resolve().parents[1] / "docs" / "cluster" / "slurm"


def slurm_environment(port: int, temp: str) -> dict[str, str]:
    """What vitamin-nas.sbatch gives ray-node.sh on a 2-node job with 1 CPU per task, both nodes on 127.0.0.1."""
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                   "PYTHON": sys.executable, "SLURM_JOB_NUM_NODES": "2", "SLURM_CPUS_PER_TASK": "1",
                   "RAY_HEAD_IP": "127.0.0.1", "RAY_NODE_IP": "127.0.0.1", "RAY_PORT": str(port), "RAY_TEMP_DIR": temp,
                   "RAY_WAIT_S": "240"}
    environment.pop("RAY_AUTH_MODE", None)  # the script sets it
    environment.pop(SINGLE_MACHINE, None)  # nodes of a cluster: Ray's cluster mode (tests/conftest.py sets it off)
    return environment


def test_the_slurm_scripts_parse_and_the_node_script_says_how_to_call_it(tmp_path):
    for script in ("vitamin-nas.sbatch", "ray-node.sh"):
        checked = subprocess.run(["bash", "-n", str(SLURM / script)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
    sbatch = (SLURM / "vitamin-nas.sbatch").read_text()
    assert '"$node" head &' in sbatch and '"$node" worker &' in sbatch and '"$node" search "$study" "$out"' in sbatch
    environment = slurm_environment(free_port(), str(tmp_path))
    usage = subprocess.run(["bash", str(SLURM / "ray-node.sh"), "leader"], capture_output=True, text=True,
                           env=environment)
    assert usage.returncode == 2 and "usage: ray-node.sh head | worker | search STUDY OUT" in usage.stderr
    del environment["RAY_HEAD_IP"]
    missing = subprocess.run(["bash", str(SLURM / "ray-node.sh"), "worker"], capture_output=True, text=True,
                             env=environment)
    assert missing.returncode != 0 and "set RAY_HEAD_IP" in missing.stderr


@pytest.mark.slow
def test_the_slurm_recipe_searches_on_a_head_and_a_worker_it_started(tmp_path, tmp_path_factory, cli):
    """ray-node.sh as vitamin-nas.sbatch's srun steps run it: `worker` (it waits for the head), `head`, then the
    batch step's `search`, which waits until both nodes joined; token authentication as Ray 2.60 starts it."""
    data = synthetic_data(tmp_path_factory.getbasetemp())
    study = write_study(tmp_path, data, algorithm="random", trials=2, resources={"cpus": 1, "concurrency": 2},
                        budget={"min_samples": 64, "max_samples": 128, "early_stopping": "none"})
    temp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    port = free_port()
    environment = slurm_environment(port, temp)
    out = tmp_path / "out"
    nodes = []
    try:
        for piece in ("worker", "head"):
            with open(tmp_path / f"{piece}.log", "w") as log:
                nodes.append(subprocess.Popen(["bash", str(SLURM / "ray-node.sh"), piece], env=environment,
                                              stdout=log, stderr=subprocess.STDOUT))
        search = subprocess.run(["bash", str(SLURM / "ray-node.sh"), "search", str(study), str(out)],
                                capture_output=True, text=True, timeout=600, env=environment)
        logs = "".join((tmp_path / f"{piece}.log").read_text() for piece in ("worker", "head"))
        assert search.returncode == 0, search.stdout[-3000:] + search.stderr[-3000:] + logs[-3000:]
        assert "2 of 2 nodes in the Ray cluster at 127.0.0.1:" in search.stderr
        assert all(node.poll() is None for node in nodes)  # `ray start --block`: the srun steps stay up
        refused = subprocess.run([*cli, "search", str(study), "--out", str(tmp_path / "refused"), "--address",
                                  f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=300,
                                 env={**slurm_environment(port, temp), "RAY_AUTH_MODE": "disabled"})
        assert refused.returncode == 2 and "--address: cannot join the Ray cluster" in refused.stderr
        assert "RAY_AUTH_MODE=token" in refused.stderr
        assert not (tmp_path / "refused").exists()  # nothing to --resume: the search never began
    finally:
        cluster = processes_mentioning(temp) + [node.pid for node in nodes]
        terminate(cluster + [child for pid in cluster for child in children(pid)])
        shutil.rmtree(temp, ignore_errors=True)
    store = ResultStore.open(out, readonly=True)
    trials = store.trials()
    assert len(trials) == 2 and {t["status"] for t in trials} == {"completed"}
    assert len({t["node"] for t in trials}) == 2  # one on the head, one on the worker
    assert {r["node"] for r in store.rungs()} == {t["node"] for t in trials}
    assert all(len(store.rungs(t["trial_id"])) == 2 for t in trials)
