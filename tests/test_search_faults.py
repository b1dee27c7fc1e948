"""`vitamin-nas search` on what cannot work (in process, `run_cli`; test_search_interrupt.py and
test_search_resume.py run it as a real subprocess): an address where no cluster answers fails at once (one
connection attempt of at most 10 s, never Ray's minutes of retries), a dashboard without its packages names the
extra to install, and a search whose every trial fails exits 1 with the error in one line."""

from __future__ import annotations

import socket
import time

import pytest
from search_helpers import tower, write_study

from nas.results import ResultStore


def test_an_address_where_no_cluster_answers_fails_within_seconds(tmp_path, search_data, run_cli):
    study = write_study(tmp_path, search_data)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    begin = time.time()
    run = run_cli("search", study, "--out", tmp_path / "out", "--address", address)
    print(f"unreachable address: exit {run.returncode} after {time.time() - begin:.1f} s")
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        f"vitamin-nas search: error: --address: no Ray cluster answers at {address} (Connection refused); start its "
        "head with `ray start --head` or give the address it printed"]
    assert not (tmp_path / "out").exists() and "watch it" not in run.stdout  # no hint before the error


def test_a_dashboard_without_its_packages_names_the_extra(tmp_path, search_data, run_cli):
    try:
        import ray.dashboard.optional_deps  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("ray[default] is installed: the dashboard starts")
    study = write_study(tmp_path, search_data)
    run = run_cli("search", study, "--out", tmp_path / "out", "--dashboard")
    (line,) = run.stderr.strip().splitlines()
    assert run.returncode == 2 and line.endswith("pip install 'vitamin-nas[dashboard]'")
    assert line.startswith("vitamin-nas search: error: --dashboard: Ray's dashboard needs packages")


@pytest.mark.slow
def test_a_search_whose_every_trial_fails_exits_1_with_the_most_common_error(local_ray, search_data, tmp_path,
                                                                            run_cli):
    missing = tmp_path / "gone"
    zeroshot = str(search_data / "eval" / "zeroshot")
    study = write_study(tmp_path, search_data, algorithm="fixed", archs=[tower(32).to_dict(), tower(64).to_dict()],
                        data={"urls": f"pipe:cat {missing}/{{0..1}}.tar", "zeroshot": zeroshot},
                        failures={"max_retries": 0, "oom_retries": 0}, resources={"cpus": 1, "concurrency": 2})
    run = run_cli("search", study, "--out", tmp_path / "out")
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    summary = run.stderr.strip().splitlines()[-1]
    assert summary.startswith("vitamin-nas search: no trial produced a result (2 trial(s), 2 failed); most common "
                              "error (2x): ")
    store = ResultStore.open(tmp_path / "out", readonly=True)
    assert {t["status"] for t in store.trials()} == {"failed"}
    assert all(summary.endswith(t["error"].strip().splitlines()[-1]) for t in store.trials())
    print(summary)
