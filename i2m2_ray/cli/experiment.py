"""``experiments/<name>.py``: prepare the data, run the pipeline, print the comparison."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from i2m2_ray.cli.common import DEFAULT_COLUMNS, build_parser, resolve_config
from i2m2_ray.cli.session import check_shared_storage, init_ray
from i2m2_ray.config import ConfigError
from i2m2_ray.data import DataError, dataset_module


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
