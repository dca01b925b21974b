"""Placement planned against the cluster before anything waits on it (known answers)."""

from __future__ import annotations

import pytest

from i2m2_ray.placement import Ask, Cluster, PlacementError, cluster_of, explicit_keys, plan

LAPTOP = Cluster(((2.0, 0.0),))  # this machine: 2 CPUs, no GPU
GPU_BOX = Cluster(((16.0, 1.0),))  # one H200 with 16 cores
TWO_NODES = Cluster(((4.0, 0.0), (8.0, 2.0)))


def test_a_gpu_config_on_a_laptop_scales_to_one_cpu_worker_and_queues_the_models() -> None:
    p = plan(Ask(num_workers=1, cpus_per_worker=4, use_gpu=True), LAPTOP, concurrent=3)
    assert p.ask == Ask(1, 1.0, False)
    assert p.models_at_once == 1  # one CPU trains, one feeds it: the three components queue
    assert p.changes == (
        "run.use_gpu: true -> false (the cluster has no GPU)",
        "run.cpus_per_worker: 4 -> 1 (the largest node's CPUs, less 1 for Ray Data)",
    )


def test_explicit_values_are_never_changed_but_refused_with_the_key_named() -> None:
    with pytest.raises(PlacementError, match=r"run.use_gpu=true asks for a GPU per worker, but the cluster has 2 CPU"):
        plan(Ask(1, 1, True), LAPTOP, explicit={"run.use_gpu"})
    too_many = r"run.num_workers=8 x run.cpus_per_worker=1 asks for 8 CPUs.*--num-workers 1 or less"
    with pytest.raises(PlacementError, match=too_many):
        plan(Ask(8, 1, False), LAPTOP, explicit={"run.num_workers"})
    with pytest.raises(PlacementError, match=r"run.cpus_per_worker=4 asks for 4 CPUs on one node"):
        plan(Ask(1, 4, False), LAPTOP, explicit={"run.cpus_per_worker"})
    with pytest.raises(PlacementError, match=r"run.num_workers=4 with run.use_gpu=true asks for 4 GPUs"):
        plan(Ask(4, 1, True), GPU_BOX, explicit={"run.num_workers"})


def test_scaled_values_follow_the_rule() -> None:
    # more GPU workers than GPUs: one per GPU
    assert plan(Ask(4, 4, True), GPU_BOX).ask == Ask(1, 4.0, True)
    # too many CPU workers: fewer workers, CPUs per worker kept at one
    p = plan(Ask(8, 1, False), LAPTOP)
    assert p.ask == Ask(1, 1.0, False) and p.changes == ("run.num_workers: 8 -> 1 (1 CPUs for training)",)
    # several nodes: a worker fits on the largest node; concurrency from the total
    p = plan(Ask(2, 2, False), TWO_NODES, concurrent=3)
    assert p.ask == Ask(2, 2.0, False) and p.models_at_once == 2  # 11 CPUs train, 4 per model
    # what fits is left alone, and every model runs at once
    p = plan(Ask(1, 1, False), Cluster(((8.0, 0.0),)), concurrent=3)
    assert p == plan(Ask(1, 1, False), Cluster(((8.0, 0.0),)), concurrent=3)
    assert p.ask == Ask(1, 1.0, False) and p.models_at_once == 3 and p.changes == ()
    # GPUs bound concurrency too: one GPU, one model at a time
    assert plan(Ask(1, 2, True), GPU_BOX, concurrent=3).models_at_once == 1


def test_a_cluster_with_no_cpu_to_spare_is_refused() -> None:
    with pytest.raises(PlacementError, match="nothing is left for training"):
        plan(Ask(1, 1, False), Cluster(((1.0, 0.0),)))


def test_cluster_and_explicit_keys_are_read_from_ray_and_the_command_line() -> None:
    nodes = [
        {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0, "memory": 1e9}},
        {"Alive": False, "Resources": {"CPU": 64.0}},
        {"Alive": True, "Resources": {"CPU": 2.0}},
    ]
    c = cluster_of(nodes)
    assert (c.cpus, c.gpus, c.largest_node_cpus) == (6.0, 1.0, 4.0)
    assert explicit_keys(["train.lr=1", "run.num_workers=2", "run.use_gpu=false"]) == {
        "run.num_workers",
        "run.use_gpu",
    }
    assert explicit_keys(["run={num_workers: 2}"]) == {"run.use_gpu", "run.num_workers", "run.cpus_per_worker"}


def test_a_refusal_is_a_config_error_and_a_placement_says_what_changed() -> None:
    from i2m2_ray.config import ConfigError, load_config
    from i2m2_ray.placement import ResourceTimeoutError, ask_of

    assert issubclass(PlacementError, ConfigError) and issubclass(ResourceTimeoutError, PlacementError)
    cfg = load_config(None, ["run.use_gpu=true", "run.cpus_per_worker=4"])
    p = plan(ask_of(cfg), LAPTOP, concurrent=3)
    assert p.describe() == (
        "run.use_gpu: true -> false (the cluster has no GPU); "
        "run.cpus_per_worker: 4 -> 1 (the largest node's CPUs, less 1 for Ray Data); up to 1 model(s) at once"
    )
    p.apply(cfg)  # what the config (and so MLflow) records is what runs
    assert (cfg.run.use_gpu, cfg.run.cpus_per_worker, cfg.run.num_workers) == (False, 1.0, 1)
    assert plan(ask_of(cfg), LAPTOP).describe() == "as configured; up to 1 model(s) at once"


def test_a_local_ray_is_sized_for_the_models_at_once_plus_the_data() -> None:
    from i2m2_ray.placement import local_cpus

    # the rule: max(cores, models at once x CPUs per model + 1 for Ray Data)
    assert local_cpus(Ask(1, 1.0, False), concurrent=3, machine_cpus=2) == 4
    assert local_cpus(Ask(2, 0.5, False), concurrent=3, machine_cpus=2) == 4
    assert local_cpus(Ask(1, 1.0, False), concurrent=3, machine_cpus=16) == 16
    # planned against that local Ray, every model of stage 1 runs at once and a CPU stays free
    p = plan(Ask(1, 1.0, False), Cluster(((4.0, 0.0),)), concurrent=3)
    assert p.models_at_once == 3 and p.ask.cpus * p.models_at_once == 4 - 1


def test_an_autoscaler_s_node_types_bound_the_cluster() -> None:
    from i2m2_ray.placement import UNBOUNDED_NODES, cluster_of_node_types

    c = cluster_of_node_types([(4.0, 0.0, 1), (8.0, 1.0, 3)])  # head + up to 3 GPU workers
    assert (c.cpus, c.gpus, c.largest_node_cpus, len(c.nodes)) == (28.0, 3.0, 8.0, 4)
    assert len(cluster_of_node_types([(8.0, 0.0, -1)]).nodes) == UNBOUNDED_NODES
    # planned against it, a GPU config keeps its GPUs though none is up yet
    assert plan(Ask(2, 4, True), c, explicit={"run.use_gpu"}).ask == Ask(2, 4.0, True)
