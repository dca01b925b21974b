"""``experiments/<name>.py`` and ``experiments/run.py``: prepare the data, check the model
config against it, run the pipeline, print the comparison."""

from __future__ import annotations

import json
import logging
import os
import sys

from i2m2_ray import console
from i2m2_ray.cli.common import build_parser, explicit_run_keys, import_plugins, preparse, resolve_config
from i2m2_ray.cli.outputs import mlflow_command, resolve_output_dir
from i2m2_ray.cli.session import check_shared_storage, init_ray, local_core_share
from i2m2_ray.config import ConfigError
from i2m2_ray.data import DataError, get_dataset
from i2m2_ray.tracking import TRACKING_ENV


def run_experiment(experiment: str | None, argv: list[str] | None = None) -> int:
    """Run one experiment's pipeline; ``experiment`` None: the one ``--experiment`` names
    (``experiments/run.py``, where ``--plugin`` modules may register it). Exit status: 0
    done, 2 bad config or data, a placement the cluster cannot hold, an output folder
    that holds an earlier run (without ``--resume`` / ``--overwrite``)."""
    from i2m2_ray.models.registry import check_model
    from i2m2_ray.pipeline import Pipeline, comparison_table
    from i2m2_ray.rundir import check_output_dir

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    generic = experiment is None
    try:
        named, plugins = preparse(argv)
        import_plugins(plugins)
        if experiment is None and named is None:  # usage (or --help) listing the registered names
            build_parser("NAME", choose_experiment=True, dataset_flags=False).parse_args(argv)
        experiment = experiment or named
        assert experiment is not None  # argparse exits without --experiment
        dataset = get_dataset(experiment)
        parser = build_parser(experiment, choose_experiment=generic)
        parser.add_argument(
            "--register",
            metavar="NAME",
            help="register the I2M2 model in the MLflow model registry under NAME (every model is logged as an "
            "MLflow model in its run either way)",
        )
        args = parser.parse_args(argv)
        console.set_verbose(args.verbose)
        if args.tracking_uri:  # this run's records go there too (read by default_tracking_uri)
            os.environ[TRACKING_ENV] = args.tracking_uri
        cfg = resolve_config(experiment, args)
        explicit = explicit_run_keys(args)
        out = resolve_output_dir(args.output_dir, experiment, args.storage_path)
        # before Ray starts: an earlier run's results are never touched without --overwrite
        check_output_dir(out, args.resume, args.overwrite)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import ray

    try:
        # stage 1: two unimodal experts + inter at once, as far as the cluster holds them
        placement = init_ray(args.address, cfg, concurrent_models=3, explicit=explicit)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        # before any data are read: on several nodes, what workers write must be shared
        from i2m2_ray import tracking

        shared = [args.storage_path or str(out / "ray_results")]
        if tracking.default_tracking_uri(out).startswith("sqlite:"):
            shared.append(str(out))
        check_shared_storage(shared)
        try:
            prepared = dataset.load(cfg, out)
            # the model section against the data's inputs, for every model to fit
            check_model(cfg, prepared.spec, prepared.info)
            print(f"data: {prepared.sizes} samples; {prepared.info}", flush=True)
            pipeline = Pipeline(
                cfg,
                prepared,
                out,
                storage_path=args.storage_path,
                resume=args.resume,
                overwrite=args.overwrite,
                placement=placement,
                register=args.register,
                core_share=local_core_share(args.address, cfg),
            )
            result = pipeline.run()
        except (DataError, ConfigError) as exc:  # bad data or config, also found in training
            print(f"error: {exc}", file=sys.stderr)
            return 2
    finally:
        ray.shutdown()
    print("\nTest metrics per paradigm:")
    print(comparison_table(result.summary, cfg.report.metrics))
    print(f"\nsummary: {out / 'summary.json'}")
    hint = tracking.ui_hint(result.tracking_uri, cfg.experiment, mlflow_command()) if result.tracking_uri else []
    print("\n".join(hint or [f"MLflow:  tracking failed; upload later with: python -m i2m2_ray.tracking upload {out}"]))
    print(json.dumps({"parent_run_id": result.parent_run_id}))
    return 0
