"""The Ray session of a command: join a cluster or start a local Ray, plan what the run
asks of it (:func:`i2m2_ray.placement.plan`), and check that what workers write is shared
between nodes."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from i2m2_ray.config import ExperimentConfig
from i2m2_ray.placement import (
    Cluster,
    Placement,
    PlacementError,
    ask_of,
    cluster_of,
    cluster_of_node_types,
    local_cpus,
    plan,
)

if TYPE_CHECKING:
    from i2m2_ray.training.cores import CoreShare

# Ray's switch for a Ray that is local to one machine: its node IP stays the loopback
# address (ray.init otherwise turns 127.0.0.1 into the machine's address), so every server
# of the local Ray (GCS, raylet, workers, agents, dashboard) listens on 127.0.0.1 only.
# Read by ray._private.services.get_node_ip_address (Ray 2.60).
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_ray(
    address: str | None,
    cfg: ExperimentConfig,
    concurrent_models: int,
    explicit: Collection[str] = (),
    attempts: int = 3,
) -> Placement:
    """Connect to a cluster, or start a local Ray, and fit ``cfg.run`` to it.

    The placement is planned for ``concurrent_models`` models at once
    (:func:`i2m2_ray.placement.plan`): values not in ``explicit`` are scaled (and ``cfg.run``
    updated, one line printed per change), an explicit value that cannot fit raises
    :class:`~i2m2_ray.placement.PlacementError`. A cluster is planned against the largest
    size its autoscaler may reach when Ray publishes its node types, else against its alive
    nodes. A local Ray is planned against the machine first (a refusal comes before Ray
    starts), then started with :func:`~i2m2_ray.placement.local_cpus` logical CPUs, every
    service bound to 127.0.0.1.

    The local Ray's dashboard listens on a free port, and its workers are told where
    (``RAY_API_SERVER_ADDRESS``): Ray Train frees the placement group of a run whose
    controller died through the state API, which otherwise looks for "the" Ray on this
    machine and fails when several run. Ray gives a starting node 30 s to register and its
    dashboard 60 s to come up; on a loaded machine that can run out, so the dashboard gets
    240 s (unless ``RAY_DASHBOARD_STARTUP_TIMEOUT_S`` says otherwise) and a failed start is
    retried (``attempts`` in all).
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    first: Placement | None = None
    if address:
        ray.init(address=address, log_to_driver=True, runtime_env=plugin_runtime_env())
    else:  # planned against the machine first: a refusal comes before Ray starts
        machine_cpus = os.cpu_count() or 1
        first = plan(ask_of(cfg), Cluster(((float(machine_cpus), float(local_gpus())),)), explicit, concurrent_models)
        first.apply(cfg)
        start_local_ray(local_cpus(first.ask, concurrent_models, machine_cpus), attempts)
    try:
        placement = plan(ask_of(cfg), planning_cluster(), explicit, concurrent_models)
    except PlacementError:
        ray.shutdown()
        raise
    if first is not None:
        placement = Placement(placement.ask, placement.models_at_once, first.changes + placement.changes)
    placement.apply(cfg)
    for change in placement.changes:
        print(f"placement: {change}", flush=True)
    return placement


def local_core_share(address: str | None, cfg: ExperimentConfig) -> CoreShare | None:
    """Where the fits of a local Ray share the machine's idle cores, or None: a cluster (its
    nodes are not this machine), or ``run.deterministic`` (thread counts that follow the
    other fits' timing change the last digits; :mod:`i2m2_ray.training.cores`)."""
    from i2m2_ray.training.cores import CoreShare

    if address or os.environ.get("RAY_ADDRESS") or cfg.run.deterministic:
        return None
    return CoreShare()


def local_gpus() -> int:
    """GPUs this machine shows torch (``CUDA_VISIBLE_DEVICES`` applies); 0 without torch."""
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def planning_cluster() -> Cluster:
    """What the connected cluster can hold: the largest size its autoscaler may reach, when
    Ray publishes the autoscaler's node types (autoscaler v2: KubeRay, the cluster launcher
    with v2 on; Ray Train reads the same record), else the alive nodes (a fixed cluster,
    or a v1 autoscaler; a fit waiting for nodes that never come ends after
    ``run.resource_timeout_s``)."""
    import ray

    alive = cluster_of(ray.nodes())
    try:  # a private API, the one Ray Train's own "can this ever fit" check uses
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:
        config = None
    if config is None or not config.node_group_configs:
        return alive
    types = [
        (float(g.resources.get("CPU", 0)), float(g.resources.get("GPU", 0)), int(g.max_count))
        for g in config.node_group_configs
    ]
    limit = cluster_of_node_types(types)
    return limit if limit.cpus >= alive.cpus and limit.gpus >= alive.gpus else alive


def plugin_runtime_env() -> dict[str, list[str]] | None:
    """Ray's ``py_modules`` for the plugins imported from the current directory (the
    workers import them too), or None: none were, or this driver runs as a ``ray job
    submit`` job, whose working directory the workers already have."""
    from i2m2_ray.cli.common import plugin_sources

    sources = plugin_sources()
    if not sources or os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        return None
    return {"py_modules": sources}


def start_local_ray(num_cpus: int, attempts: int = 3) -> None:
    """A local Ray of ``num_cpus`` logical CPUs, every service on 127.0.0.1 (see
    :func:`init_ray`)."""
    import socket

    import ray
    import ray._private.ray_constants as ray_constants

    # Ray's local-only mode, for this process (read at import, so set on the module too)
    # and for the processes the local Ray starts (they inherit the environment)
    os.environ[LOCAL_ONLY_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    # Ray waits 60 s for the dashboard by default; a busy machine can need longer
    os.environ.setdefault("RAY_DASHBOARD_STARTUP_TIMEOUT_S", "240")
    # no cloud can preempt a node of this machine: Ray Train's preemption watcher would only
    # cost an actor process per fit (and an error line about its arguments in the object store)
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # a Ray Train worker's report waits in a queue of one until its controller polls, every 2
    # s by default: an epoch shorter than that lasted 2 s (benchmarks/report_latency.py: 10
    # reports 18 s -> 1.9 s); a missed poll is only awaited again (a worker is declared dead
    # after RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S, 600 s), so polling often costs no safety
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    for attempt in range(1, attempts + 1):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                dashboard_port=port,
                log_to_driver=True,
                runtime_env={
                    "env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"},
                    **(plugin_runtime_env() or {}),
                },
                _node_ip_address="127.0.0.1",
            )
            return
        except Exception as exc:  # Ray raises a bare Exception when the node times out
            ray.shutdown()
            if attempt == attempts:
                raise RuntimeError(f"a local Ray did not start after {attempts} attempts: {exc}") from exc
            print(f"local Ray failed to start ({exc}); retrying ({attempt}/{attempts})", file=sys.stderr, flush=True)
            time.sleep(5 * attempt)


def check_shared_storage(paths: list[str]) -> None:
    """On a multi-node cluster, every local path that workers write to must be visible
    from every node (an NFS mount, say); URIs (``s3://``, ``gs://``) are left to Ray.

    Fails at start, naming the path and the node, instead of at the first checkpoint.
    """
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    local = [p for p in paths if "://" not in p]
    if len(nodes) < 2 or not local:
        return

    @ray.remote(num_cpus=0)
    def visible(marker: str) -> bool:
        return os.path.exists(marker)

    for path in local:
        Path(path).mkdir(parents=True, exist_ok=True)
        marker = Path(path) / f".i2m2-shared-check-{uuid.uuid4().hex}"
        marker.write_text("")
        try:
            for node in nodes:
                strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                if not ray.get(visible.options(scheduling_strategy=strategy).remote(str(marker)), timeout=120):
                    raise SystemExit(
                        f"error: {path} is a local path that node {node['NodeManagerAddress']} cannot see; "
                        f"a multi-node run needs storage every node shares: an NFS mount on every node, "
                        f"or an s3:// / gs:// URI for --storage-path, and a tracking server "
                        f"(MLFLOW_TRACKING_URI) instead of the default sqlite file"
                    )
        finally:
            marker.unlink(missing_ok=True)
