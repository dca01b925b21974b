"""``experiments/search.py``: the sweep's command line (the experiment scripts' options plus
the sweep's), then :func:`i2m2_ray.tuning.run_sweep`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from i2m2_ray import console
from i2m2_ray.cli.common import CONFIG_DIR, explicit_run_keys, import_plugins, preparse, resolve_config
from i2m2_ray.cli.common import build_parser as pipeline_parser
from i2m2_ray.cli.outputs import mlflow_command, resolve_output_dir
from i2m2_ray.cli.session import check_shared_storage, init_ray
from i2m2_ray.config import ConfigError
from i2m2_ray.tracking import TRACKING_ENV, mask_credentials, ui_hint
from i2m2_ray.tuning import (
    SweepOptions,
    SweepResult,
    check_schedule,
    default_search_file,
    load_search_file,
    load_sweep_options,
    ranking_table,
    run_sweep,
)
from i2m2_ray.tuning.state import sweep_exists, sweep_exists_message


def build_parser(experiment: str) -> argparse.ArgumentParser:
    """The experiment scripts' options (data, config, placement...) plus the sweep's."""
    from i2m2_ray.data import dataset_names

    p = pipeline_parser(experiment)
    p.prog = "experiments/search.py"
    p.description = (
        "Hyper-parameter search over I2M2 on Ray Tune: Optuna (TPE) proposes, ASHA stops, "
        "each trial trains with Ray Train; a parent MLflow run with a child run per trial."
    )
    p.add_argument("--experiment", default="fastmri", choices=dataset_names(), help="dataset (default: fastmri)")
    p.add_argument(
        "--space",
        help="search YAML (default: configs/search/<experiment>.yaml with --data-dir, else "
        "configs/search/<experiment>_demo.yaml; configs/search/default.yaml if missing)",
    )
    p.add_argument("--trials", type=int, default=20, help="number of trials (default 20)")
    p.add_argument("--max-concurrent", type=int, default=2, help="trials at once, capped by the cluster (default 2)")
    p.add_argument("--time-budget", type=float, help="stop the sweep after this many seconds")
    p.add_argument("--name", help="sweep name (default: search-<experiment>); --resume continues it")
    p.add_argument(
        "--trust-storage",
        action="store_true",
        help="--resume a sweep whose files this user did not (provably) write: restoring it unpickles them",
    )
    # --resume continues an interrupted sweep; --overwrite discards one of the same name
    # (its search/<name>/ folder, trials and components; its MLflow runs stay)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, start or join Ray, run or resume the sweep, print the result."""
    from i2m2_ray.data import DataError, dataset_names, get_dataset

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    experiment, plugins = preparse(argv)
    experiment = experiment or "fastmri"
    import_plugins(plugins)
    if experiment not in dataset_names():
        print(f"error: unknown experiment '{experiment}'; known: {dataset_names()}", file=sys.stderr)
        return 2
    args = build_parser(experiment).parse_args(argv)
    console.set_verbose(args.verbose)
    if args.tracking_uri:  # the sweep's records go there (read by default_tracking_uri)
        os.environ[TRACKING_ENV] = args.tracking_uri
    name = args.name or f"search-{experiment}"
    try:
        explicit = explicit_run_keys(args)  # the command line's own, not the search file's
        out = resolve_output_dir(args.output_dir, experiment, args.storage_path)
        if args.resume and args.overwrite:
            raise ConfigError("--resume continues the sweep and --overwrite discards it: choose one")
        if args.resume:
            opts = load_sweep_options(out, name, trust=args.trust_storage)
            if args.data_dir is not None and not same_path(args.data_dir, opts.data_dir):
                started = opts.data_dir or "(none: the generated sample)"
                raise ConfigError(
                    f"--resume: the sweep in {opts.sweep_dir} reads --data-dir {started}, not {args.data_dir}; "
                    "resume with its data, or start another sweep (--name, --overwrite)"
                )
            print(f"resuming sweep '{name}' from {opts.experiment_path}", flush=True)
        else:
            if args.trials < 1 or args.max_concurrent < 1:
                raise ConfigError("--trials and --max-concurrent must be >= 1")
            search = load_search_file(args.space or default_search_file(experiment, bool(args.data_dir)))
            if search.experiment not in (None, experiment):
                raise ConfigError(f"{search.path} is a search space for '{search.experiment}', not '{experiment}'")
            if args.config is None and not args.from_run:
                default = CONFIG_DIR / (f"{experiment}.yaml" if args.data_dir else f"{experiment}_demo.yaml")
                args.config = str(search.base_config or default)
            args.overrides = [*search.overrides, *args.overrides]
            opts = SweepOptions(
                experiment=experiment,
                search=search,
                base=resolve_config(experiment, args),
                output_dir=out,
                trials=args.trials,
                max_concurrent=args.max_concurrent,
                time_budget_s=args.time_budget,
                name=name,
                storage_path=args.storage_path,
                data_dir=args.data_dir,
                annotations=args.annotations,
                overwrite=args.overwrite,
            )
            check_schedule(opts)
            if sweep_exists(opts) and not args.overwrite:  # before Ray starts
                raise ConfigError(sweep_exists_message(opts))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import ray

    try:
        # the components fit together, then --max-concurrent trials: as far as the cluster holds
        concurrent = max(opts.max_concurrent, 3)
        placement = init_ray(args.address, opts.base, concurrent_models=concurrent, explicit=explicit)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    opts.fits_at_once, opts.placement = placement.models_at_once, placement.describe()
    try:
        # every node writes trial results and reads the components: shared storage on a cluster
        check_shared_storage([opts.storage, str(out)])
        try:
            prepared = get_dataset(experiment).load(opts.base, out)
            print(f"data: {prepared.sizes} samples; {prepared.info}", flush=True)
            result = run_sweep(opts, prepared)
        except (DataError, ConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    finally:
        ray.shutdown()
    print_result(opts, result)
    return 3 if result.interrupted else 0


def same_path(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a == b
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def print_result(opts: SweepOptions, result: SweepResult) -> None:
    """The best configuration, its test metrics and the ranked table."""
    monitor = opts.base.train.monitor
    columns = list(opts.base.report.metrics)
    counts = {s: sum(r.status == s for r in result.rows) for s in ("completed", "stopped", "error", "unfinished")}
    print(f"\nSweep '{opts.sweep_name}': {counts}; {result.total_epochs} training epochs in all")
    if result.best is not None and result.best_plan is not None:
        b = result.best
        print(f"\nBest trial {b.trial_id} ({result.best_plan.paradigm}): val_{monitor} {b.score:.4f}")
        print("  overrides: " + " ".join(result.best_plan.overrides))
        print("  test:      " + "  ".join(f"{c} {b.test[c]:.4f}" for c in columns if c in b.test))
        if "best_config" in result.artifacts:
            print(f"  config:    {result.artifacts['best_config']}")
    else:
        print("\nNo trial completed.")
    print("\nTrials, best first:")
    print(ranking_table(result.rows, f"val_{monitor}", columns[:2]))
    if result.importance:
        print("\nParameter importance (fANOVA, completed trials):")
        for k, v in result.importance.items():
            print(f"  {k:40s} {v:.3f}")
    if result.interrupted:
        print("\nThe sweep was interrupted; continue it with --resume (same --output-dir and --name).")
    hint = ui_hint(result.tracking_uri, f"{opts.experiment}-search", mlflow_command())
    print("\n" + "\n".join(hint or [f"MLflow:  {mask_credentials(result.tracking_uri)} did not answer"]))
    # the Optuna study of the trials (pip install -e '.[dashboard]' brings optuna-dashboard)
    print(f"Optuna:  optuna-dashboard {opts.optuna_storage}  (study '{opts.sweep_name}')")
    print(
        json.dumps({"parent_run_id": result.parent_run_id, "best_trial": result.best.trial_id if result.best else None})
    )
