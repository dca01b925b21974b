"""Command line shared by the experiment scripts (``experiments/<name>.py``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from i2m2_ray.config import ConfigError, ExperimentConfig, load_config
from i2m2_ray.data import DataError, dataset_module

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_COLUMNS = ["accuracy", "balanced_accuracy"]


def build_parser(experiment: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"experiments/{experiment}.py", description=f"I2M2 pipeline on {experiment}")
    p.add_argument("--data-dir", help="folder of real data; omitted: a generated sample is written and used")
    p.add_argument("--annotations", help="labels folder (fastMRI+: the Annotations folder)")
    p.add_argument(
        "--config",
        help=f"YAML config (default: configs/{experiment}.yaml with --data-dir, else configs/{experiment}_demo.yaml)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.epochs=5 (repeatable)",
    )
    p.add_argument("--output-dir", help=f"results folder (default: outputs/{experiment})")
    p.add_argument("--num-workers", type=int, help="Ray Train workers per model")
    p.add_argument("--use-gpu", action="store_true", default=None, help="train on GPUs")
    p.add_argument("--seed", type=int, help="seed for split, initialisation and shuffling")
    p.add_argument(
        "--storage-path", help="Ray Train storage (local path, NFS, s3://, gs://); default <output-dir>/ray_results"
    )
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--smoke-test", action="store_true", help="tiny data and model, 1-2 epochs")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in the same --output-dir: finished models are reused",
    )
    module = dataset_module(experiment)
    if hasattr(module, "add_arguments"):  # dataset-specific flags (e.g. MIMIC's --task)
        module.add_arguments(p)
    return p


def resolve_config(experiment: str, args: argparse.Namespace) -> ExperimentConfig:
    path = args.config or CONFIG_DIR / (f"{experiment}.yaml" if args.data_dir else f"{experiment}_demo.yaml")
    module = dataset_module(experiment)
    overrides = list(module.SMOKE_OVERRIDES) if args.smoke_test else []
    if hasattr(module, "argument_overrides"):  # dataset flags -> config keys
        overrides += list(module.argument_overrides(args))
    overrides += list(args.overrides)
    if args.num_workers is not None:
        overrides.append(f"run.num_workers={args.num_workers}")
    if args.seed is not None:
        overrides.append(f"run.seed={args.seed}")
    if args.use_gpu:
        overrides.append("run.use_gpu=true")
    return load_config(path, overrides)


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


def run_experiment(experiment: str, argv: list[str] | None = None) -> int:
    from i2m2_ray.pipeline import Pipeline, PipelineError, comparison_table

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser(experiment).parse_args(argv)
    out = Path(args.output_dir or Path("outputs") / experiment).resolve()
    try:
        cfg = resolve_config(experiment, args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import ray

    init_ray(args.address, cfg, concurrent_models=3)  # stage 1: two unimodal experts + inter
    try:
        # before any data are read: on several nodes, what workers write must be shared
        from i2m2_ray import tracking

        shared = [args.storage_path or str(out / "ray_results")]
        if tracking.default_tracking_uri(out).startswith("sqlite:"):
            shared.append(str(out))
        check_shared_storage(shared)
        try:
            prepared = dataset_module(experiment).load(cfg, args.data_dir, args.annotations, out)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"data: {prepared.sizes} samples; {prepared.info}", flush=True)
        try:
            pipeline = Pipeline(cfg, prepared, out, storage_path=args.storage_path, resume=args.resume)
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        result = pipeline.run()
    finally:
        ray.shutdown()
    cols = list(getattr(dataset_module(experiment), "SUMMARY_COLUMNS", DEFAULT_COLUMNS))
    print("\nTest metrics per paradigm:")
    print(comparison_table(result.summary, cols))
    print(f"\nsummary: {out / 'summary.json'}")
    if result.tracking_uri.startswith(("http://", "https://")):
        print(f"MLflow:  open {result.tracking_uri} (experiment '{cfg.experiment}')")
    elif result.tracking_uri:
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        ui = str(mlflow_bin) if mlflow_bin.is_file() else "mlflow"
        print(f"MLflow:  {ui} ui --backend-store-uri {result.tracking_uri} --host 127.0.0.1 --port 5000")
    else:
        print(f"MLflow:  tracking failed; upload later with: python -m i2m2_ray.tracking upload {out}")
    print(json.dumps({"parent_run_id": result.parent_run_id}))
    return 0


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
