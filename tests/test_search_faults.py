"""`vitamin-nas search` on what cannot work, as a user runs it (a real subprocess): an address where no cluster
answers fails at once (one connection attempt of at most 10 s, never Ray's minutes of retries), a dashboard
without its packages names the extra to install, and a search whose every trial fails exits 1 with the error in
one line."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from search_helpers import synthetic_data, tower, write_study

from nas.results import ResultStore


def test_an_address_where_no_cluster_answers_fails_within_seconds(tmp_path, tmp_path_factory, cli):
    data = synthetic_data(tmp_path_factory.getbasetemp())
    study = write_study(tmp_path, data)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    begin = time.time()
    run = subprocess.run([*cli, "search", str(study), "--out", str(tmp_path / "out"), "--address", address],
                         capture_output=True, text=True, timeout=300)
    print(f"unreachable address: exit {run.returncode} after {time.time() - begin:.1f} s (imports included)")
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        f"vitamin-nas search: error: --address: no Ray cluster answers at {address} (Connection refused); start its "
        "head with `ray start --head` or give the address it printed"]
    assert not (tmp_path / "out").exists()


def test_a_dashboard_without_its_packages_names_the_extra(tmp_path, tmp_path_factory, cli):
    try:
        import ray.dashboard.optional_deps  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("ray[default] is installed: the dashboard starts")
    study = write_study(tmp_path, synthetic_data(tmp_path_factory.getbasetemp()))
    run = subprocess.run([*cli, "search", str(study), "--out", str(tmp_path / "out"), "--dashboard"],
                         capture_output=True, text=True, timeout=300)
    (line,) = run.stderr.strip().splitlines()
    assert run.returncode == 2 and line.endswith("pip install 'vitamin-nas[dashboard]'")
    assert line.startswith("vitamin-nas search: error: --dashboard: Ray's dashboard needs packages")


@pytest.mark.slow
def test_a_search_whose_every_trial_fails_exits_1_with_the_most_common_error(tmp_path, tmp_path_factory, cli):
    data = synthetic_data(tmp_path_factory.getbasetemp())
    missing = tmp_path / "gone"
    study = write_study(tmp_path, data, algorithm="fixed", archs=[tower(32).to_dict(), tower(64).to_dict()],
                        data={"urls": f"pipe:cat {missing}/{{0..1}}.tar", "zeroshot": str(data / "eval" / "zeroshot")},
                        failures={"max_retries": 0, "oom_retries": 0}, resources={"cpus": 1, "concurrency": 2})
    run = subprocess.run([*cli, "search", str(study), "--out", str(tmp_path / "out")], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    summary = run.stderr.strip().splitlines()[-1]
    assert summary.startswith("vitamin-nas search: no trial produced a result (2 trial(s), 2 failed); most common "
                              "error (2x): ")
    store = ResultStore.open(tmp_path / "out", readonly=True)
    assert {t["status"] for t in store.trials()} == {"failed"}
    assert all(summary.endswith(t["error"].strip().splitlines()[-1]) for t in store.trials())
    print(summary)
