"""The Ray session of a command: join a cluster or start a local Ray, and check that what
workers write is shared between nodes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from i2m2_ray.config import ExperimentConfig


def init_ray(address: str | None, cfg: ExperimentConfig, concurrent_models: int, attempts: int = 3) -> None:
    """Connect to a cluster, or start a local Ray with enough logical CPUs for the
    concurrent trainers plus the data pipeline (torch threads are capped per worker).

    The local Ray's dashboard listens on 127.0.0.1 on a free port, and its workers are told
    where (``RAY_API_SERVER_ADDRESS``): Ray Train frees the placement group of a run whose
    controller died through the state API, which otherwise looks for "the" Ray on this
    machine and fails when several run. Ray gives a starting node 30 s to register and its
    dashboard 60 s to come up; on a loaded machine that can run out, so the dashboard gets
    240 s (unless ``RAY_DASHBOARD_STARTUP_TIMEOUT_S`` says otherwise) and a failed start is
    retried (``attempts`` in all).
    """
    import socket

    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    needed = int(concurrent_models * cfg.run.num_workers * cfg.run.cpus_per_worker) + 2
    # Ray waits 60 s for the dashboard by default; a busy machine can need longer
    os.environ.setdefault("RAY_DASHBOARD_STARTUP_TIMEOUT_S", "240")
    for attempt in range(1, attempts + 1):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            ray.init(
                address="local",
                num_cpus=max(os.cpu_count() or 1, needed),
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                dashboard_port=port,
                log_to_driver=True,
                runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}},
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
