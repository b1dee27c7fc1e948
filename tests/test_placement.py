"""What a trial asks of the cluster (`nas.search.placement`), computed by hand for one-process, fractional-GPU and
data-parallel trials on clusters described by their resources: no GPU and no running Ray needed."""

from __future__ import annotations

import os
import sys

import pytest
from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

from nas.search.placement import (
    CUDA_CONTEXT_BYTES,
    TRIAL_DRIVER_MEMORY,
    concurrency,
    device_memory_fraction,
    places,
    trial_request,
    worker_request,
)
from nas.study import Resources

GIB = 2**30
H100 = 80 * GIB  # bytes of device memory


def test_a_one_process_trial_holds_its_own_share():
    cpu = Resources(cpus=2)
    assert trial_request(cpu) == {"cpu": 2.0, "gpu": 0.0} and worker_request(cpu) == {"CPU": 2.0}
    limited = Resources(cpus=1, memory_gib=1.5)
    assert trial_request(limited) == {"cpu": 1.0, "gpu": 0.0, "memory": 1.5 * GIB}
    assert concurrency(cpu, {"CPU": 16.0}) == 8 and concurrency(cpu, {"CPU": 3.0}) == 1
    assert concurrency(Resources(cpus=2, concurrency=3), {"CPU": 16.0}) == 3  # the study's own limit
    assert concurrency(Resources(cpus=8), {"CPU": 2.0}) == 1  # never 0: check_resources refuses what cannot run


def test_fractional_gpus_pack_trials_on_a_device_each_capped_to_its_share():
    quarter = Resources(cpus=2, gpus=0.25)
    assert trial_request(quarter) == {"cpu": 2.0, "gpu": 0.25}
    # 8 GPUs and 64 CPUs: 32 quarters, and 32 trials of 2 CPUs; 1 GPU and 16 CPUs: 4 quarters bound it
    assert concurrency(quarter, {"CPU": 64.0, "GPU": 8.0}) == 32
    assert concurrency(quarter, {"CPU": 16.0, "GPU": 1.0}) == 4
    assert concurrency(quarter, {"CPU": 4.0, "GPU": 1.0}) == 2  # or the CPUs
    # a quarter of the device, less the CUDA context the allocator does not count: 0.25 - 0.5/80
    assert device_memory_fraction(quarter, H100) == pytest.approx(0.25 - CUDA_CONTEXT_BYTES / H100)
    assert device_memory_fraction(quarter, H100) == pytest.approx(0.24375)
    assert device_memory_fraction(Resources(gpus=0.5, memory_gib=10), H100) == pytest.approx(10 / 80)  # the smaller
    assert device_memory_fraction(Resources(gpus=1), H100) is None  # a device of its own: no cap
    assert device_memory_fraction(Resources(gpus=1, memory_gib=40), H100) == pytest.approx(0.5)
    assert device_memory_fraction(Resources(gpus=0.25), 2**29) == 0.0  # a device too small to share: nothing left


def test_a_data_parallel_trial_holds_no_cpu_or_gpu_itself_and_its_ranks_hold_theirs():
    ranks = Resources(workers=4, cpus=8, gpus=1, memory_gib=64)
    assert trial_request(ranks) == {"cpu": 0, "gpu": 0, "memory": float(TRIAL_DRIVER_MEMORY)}
    assert worker_request(ranks) == {"CPU": 8.0, "GPU": 1.0, "memory": 64.0 * GIB}
    # two nodes of 8 GPUs and 96 CPUs: 16 ranks, 4 trials at once (by GPUs: 16/4; by CPUs 192/32 = 6)
    two_nodes = [{"CPU": 96.0, "GPU": 8.0, "memory": 1000.0 * GIB}] * 2
    assert places(ranks, two_nodes) == 16
    assert concurrency(ranks, {"CPU": 192.0, "GPU": 16.0}) == 4
    assert concurrency(Resources(workers=2, cpus=1), {"CPU": 2.0}) == 1  # the tests' machine: one trial of 2 ranks
    assert places(Resources(workers=2, cpus=1), [{"CPU": 2.0}]) == 2
    assert places(Resources(workers=2, cpus=3), [{"CPU": 2.0}]) == 0
    assert places(Resources(workers=3, cpus=1, gpus=1), [{"CPU": 8.0, "GPU": 2.0}]) == 2  # one node's GPUs: 2 ranks
    # Ray Tune takes the request: a bundle of the driving process's memory only (an empty one it refuses)
    factory = resource_dict_to_pg_factory(trial_request(ranks))
    assert factory.required_resources == {"memory": float(TRIAL_DRIVER_MEMORY)}
    with pytest.raises(ValueError, match="empty head"):
        resource_dict_to_pg_factory({"cpu": 0, "gpu": 0})


def test_workers_are_written_only_when_a_trial_has_several():
    """A study stored before data-parallel trials existed reads back as the same study (`--resume` compares)."""
    assert Resources(workers=2, cpus=1).data_parallel and not Resources().data_parallel
    assert Resources(workers=2, gpus=1).to_dict()["workers"] == 2 and "workers" not in Resources().to_dict()


def test_the_node_types_an_autoscaler_can_add_come_from_the_launchers_config(tmp_path):
    from nas.search.driver import autoscaler_node_types

    config = tmp_path / "ray_bootstrap_config.yaml"
    assert autoscaler_node_types(config) == []  # no launcher config: a fixed cluster
    config.write_text("head_node_type: head\navailable_node_types:\n"
                      "  head: {resources: {CPU: 8}, min_workers: 0, max_workers: 0}\n"
                      "  gpu: {resources: {CPU: 24, GPU: 1, memory: 200000000000}, min_workers: 0, max_workers: 8}\n")
    assert autoscaler_node_types(config) == [{"CPU": 24.0, "GPU": 1.0, "memory": 2e11}]
    assert places(Resources(cpus=8, gpus=1), autoscaler_node_types(config)) == 1
    config.write_text("available_node_types: [unclosed")
    assert autoscaler_node_types(config) == []


def test_a_search_asks_for_rays_single_machine_mode_only_before_ray_is_imported(monkeypatch):
    from nas.search import loopback

    monkeypatch.delenv(loopback.SINGLE_MACHINE, raising=False)
    loopback.prefer_loopback()  # Ray is imported here already (this module imports Ray Tune): too late
    assert loopback.SINGLE_MACHINE not in os.environ
    monkeypatch.delitem(sys.modules, "ray")
    loopback.prefer_loopback()
    assert os.environ[loopback.SINGLE_MACHINE] == "0"
