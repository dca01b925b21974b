"""A sweep: Optuna (TPE) proposes, ASHA stops, Ray Train trains every trial, MLflow records it.

:func:`run_sweep` runs (or resumes) one on the connected Ray cluster: the components the
trials may start from (the pipeline's stage 1, once per sweep), the Tune run of the trials
(:mod:`i2m2_ray.tuning.trial`, recorded by :mod:`i2m2_ray.tuning.callback`), and the report
(:mod:`i2m2_ray.tuning.report`). ``search/<name>/sweep.json`` keeps what ``--resume`` needs
(:mod:`i2m2_ray.tuning.state`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from i2m2_ray import tracking
from i2m2_ray.config import ConfigError, ExperimentConfig
from i2m2_ray.data.base import DataError
from i2m2_ray.files import atomic_write_json, fingerprint_mismatch
from i2m2_ray.placement import Cluster, ask_of, plan
from i2m2_ray.spec import component_paradigm
from i2m2_ray.tuning.report import Report, SweepResult, TrialRow, log_report, trial_rows, write_report
from i2m2_ray.tuning.space import SearchSpace, TrialRecipe, check_space
from i2m2_ray.tuning.state import (
    SweepOptions,
    discard_sweep,
    read_state,
    save_sweep_state,
    sweep_data,
    sweep_exists,
    sweep_exists_message,
)
from i2m2_ray.tuning.trial import TRIAL_DRIVER_RESOURCES, SweepContext, run_trial, trial_dirname

if TYPE_CHECKING:
    from i2m2_ray.data.base import PreparedData

TRIAL_OUTCOMES = {"completed": "completed", "stopped": "stopped_early", "error": "error"}


# --------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------


def trial_concurrency(requested: int, resources: Mapping[str, float], cfg: ExperimentConfig, trials: int) -> int:
    """How many trials run at once: ``requested``, capped by what the cluster holds.

    A trial needs ``num_workers * cpus_per_worker`` CPUs (and ``num_workers`` GPUs with
    ``use_gpu``); one CPU is kept for the Ray Data pipelines that feed the trials
    (:func:`i2m2_ray.placement.plan`, the config taken as it is).

    Raises:
        PlacementError: not even one trial fits (no GPU for ``use_gpu``, no CPU left
            beside the one kept for the data).
    """
    cluster = Cluster(((float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))),))
    keys = ("run.use_gpu", "run.num_workers", "run.cpus_per_worker")
    return max(1, min(requested, trials, plan(ask_of(cfg), cluster, keys, concurrent=requested).models_at_once))


# --------------------------------------------------------------------------------------
# Sweep state: the parent run, sweep.json, resume
# --------------------------------------------------------------------------------------


def _start_or_reopen_parent(opts: SweepOptions, uri: str) -> tuple[str, str]:
    """(experiment id, parent run id): a new parent run, or the saved one on resume."""
    exp_id = tracking.get_experiment_id(uri, f"{opts.experiment}-search", opts.output_dir / "mlartifacts")
    if opts.resume:
        saved = read_state(opts.state_path)
        parent = saved["parent_run_id"]
        if tracking.get_run(uri, parent).status != "RUNNING":
            tracking.reopen_run(uri, parent)
        tracking.set_tag(uri, parent, "resumed", str(int(saved.get("resumes", 0)) + 1))
        saved["resumes"] = int(saved.get("resumes", 0)) + 1
        atomic_write_json(opts.state_path, saved)
        return str(saved["experiment_id"]), str(parent)
    parent = tracking.start_run(
        uri,
        exp_id,
        opts.sweep_name,
        tags={"dataset": opts.experiment, "stage": "search", "strategy": opts.strategy, **tracking.provenance()},
        params={
            "trials": opts.trials,
            "max_concurrent": opts.max_concurrent,
            "time_budget_s": opts.time_budget_s,
            "strategy": opts.strategy,
            "search_file": str(opts.search.path),
            "seed": opts.base.run.seed,
            "objective": f"val_{opts.base.train.monitor}",
            "mode": opts.base.train.monitor_mode,
            "base": opts.base.to_dict(),
            "placement": opts.placement or "not planned",
        },
    )
    return exp_id, parent


def _close_open_runs(uri: str, exp_id: str, parent: str, status: str, outcome: str = "interrupted") -> None:
    """End the child runs still RUNNING: trials that did not finish in this session (tagged
    with ``outcome``) and components whose fit was cut short."""
    from i2m2_ray.tuning.callback import TRIAL_TAG

    for run in tracking.child_runs(uri, exp_id, parent):
        if run.status == "RUNNING":
            if TRIAL_TAG in run.tags:
                tracking.set_tag(uri, run.run_id, "outcome", outcome)
            tracking.end_run(uri, run.run_id, status)


def _reconcile(uri: str, exp_id: str, parent: str, rows: Sequence[TrialRow]) -> None:
    """A trial Tune finished while its end was not yet written (e.g. the driver died in
    between) gets its final status now."""
    from i2m2_ray.tuning.callback import find_trial_runs

    runs = find_trial_runs(uri, exp_id, parent)
    for r in rows:
        for run_id in runs.get(r.trial_id, []):
            if r.status == "unfinished" or tracking.get_run(uri, run_id).status != "RUNNING":
                continue
            tracking.set_tag(uri, run_id, "outcome", TRIAL_OUTCOMES[r.status])
            tracking.end_run(uri, run_id, "FAILED" if r.status == "error" else "FINISHED")


# --------------------------------------------------------------------------------------
# Components, searcher, scheduler
# --------------------------------------------------------------------------------------


def _needs_components(space: SearchSpace, base: ExperimentConfig) -> bool:
    for p in space.params:
        if p.name == "product.init":
            return "components" in p.choices
    return base.product.init == "components"


def fit_components(opts: SweepOptions, prepared: PreparedData, uri: str, exp_id: str, parent: str) -> dict[str, str]:
    """Fit each unimodal expert and the inter expert once, with the base config, by the
    pipeline's stage 1 (:class:`i2m2_ray.pipeline.StageFitter`): concurrently, into
    ``search/<name>/components/``, each a child run of the sweep's parent run, whose
    metrics also get ``components.<model>.*``. A resumed sweep reuses the ones it finished.
    Returns component -> checkpoint, for the trials with ``product.init: components``."""
    from i2m2_ray.pipeline import StageFitter

    folder = opts.sweep_dir / "components"
    tracker = tracking.Tracker(uri, str(folder / "results"), work="the sweep", later=None)
    stage = StageFitter(
        opts.base,
        prepared,
        folder,
        storage_path=opts.train_storage,
        run_suffix=opts.sweep_name,
        tracker=tracker,
        max_in_flight=opts.fits_at_once,
        placement=opts.placement,
    )
    names = [component_paradigm(e) for e in prepared.spec.components("i2m2")]
    todo = [n for n in names if not stage.finished(n)]
    if not todo:
        print(f"components: reusing {names} from {folder}", flush=True)
    else:
        print(f"components: fitting {todo} once for the sweep", flush=True)
        if opts.resume:
            tracker.call(_kill_stale_components, exp_id, parent)
    # a reused component's run was recorded under this parent when it was fitted
    results = stage.fit("components", names, exp_id, parent, {}, reused_runs=False)
    for n in todo:
        metrics = {f"components.{n}.{k}": v for k, v in results[n].val.items()}
        metrics.update({f"components.{n}.test_{k}": v for k, v in results[n].test.items()})
        tracker.call(tracking.log_metrics, parent, metrics)
    return {n: res.checkpoint for n, res in results.items()}


def _kill_stale_components(uri: str, exp_id: str, parent: str) -> None:
    """End as KILLED the component runs a lost driver left RUNNING (their fits start again)."""
    for run in tracking.child_runs(uri, exp_id, parent):
        if run.status == "RUNNING" and run.tags.get("stage") == "components":
            tracking.end_run(uri, run.run_id, "KILLED")


def _search_alg(opts: SweepOptions, space: SearchSpace, metric: str, mode: str) -> Any:
    """Optuna's TPE over ``space``; its study prunes with the search file's
    ``optuna_pruner`` where there is one (:mod:`i2m2_ray.tuning.tune_pruning`)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    # TPE samples at random for its first n_startup_trials (10 by default): a short sweep
    # would never get past them, so it starts modelling after a quarter of the trials
    startup = max(2, min(10, opts.trials // 4))
    sampler = optuna.samplers.TPESampler(seed=opts.base.run.seed, n_startup_trials=startup)
    if opts.search.pruner is not None:
        from i2m2_ray.tuning.tune_pruning import PruningOptunaSearch

        return PruningOptunaSearch(opts.search.pruner.build(), space=space, metric=metric, mode=mode, sampler=sampler)
    return OptunaSearch(space=space, metric=metric, mode=mode, sampler=sampler)


def check_schedule(opts: SweepOptions) -> None:
    """ASHA's settings against the trials' epochs (a :class:`ConfigError`; the command line
    calls it before Ray starts)."""
    epochs, asha = opts.base.product.epochs, opts.search.asha
    if opts.search.pruner is None and asha.grace_period >= epochs:
        raise ConfigError(
            f"asha.grace_period ({asha.grace_period}) must be below product.epochs ({epochs}), "
            "or ASHA can never stop a trial"
        )


def _scheduler(opts: SweepOptions) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    check_schedule(opts)
    epochs, asha = opts.base.product.epochs, opts.search.asha
    if asha.brackets > 1:
        import numpy as np

        # Tune draws each new trial's bracket from NumPy's global generator; seeded, the
        # same sweep puts the same trials in the same brackets.
        np.random.seed(opts.base.run.seed)
    # Rungs strictly before the last epoch: a trial that reaches its last epoch is never
    # stopped there, so it always gets to score the test split.
    return ASHAScheduler(
        time_attr="epoch",
        max_t=max(asha.grace_period, epochs - 1),
        grace_period=asha.grace_period,
        reduction_factor=asha.reduction_factor,
        brackets=asha.brackets,
        stop_last_trials=False,
    )


# errors that fail every trial alike (the data or the config, not the sampled values)
RECURRING_NAMES = ("DataError", "ConfigError", "CheckpointError", "PlacementError", "ResourceTimeoutError")


def recurring_failure(rows: Sequence[TrialRow]) -> None:
    """Raise the error every trial failed on, when none got anywhere and the failures are of
    a kind that would recur (bad data, a bad config: the command exits 2), with its text."""
    failed = [r for r in rows if r.status == "error"]
    if not failed or any(r.status in ("completed", "stopped") for r in rows):
        return
    for r in failed:
        name = next((n for n in RECURRING_NAMES if n in r.error), None)
        if name is not None:
            cls = DataError if name == "DataError" else ConfigError
            raise cls(f"every trial failed; trial {r.trial_id}: {r.error}")


def _grid_combinations(grid: Mapping[str, Sequence[Any]]) -> Iterator[dict[str, Any]]:
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, values, strict=True))


# --------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------


def _tuner(
    opts: SweepOptions, trainable: Any, restore: bool, callback: Any, space: SearchSpace, concurrency: int
) -> Any:
    """A new Tuner for the sweep, or the saved one when resuming."""
    from ray import tune

    if restore:
        from ray.tune import ResumeConfig

        return tune.Tuner.restore(
            opts.experiment_path,
            trainable=trainable,
            # unfinished trials start again (Train resumes them from their last epoch);
            # completed, stopped and failed ones are kept as they are
            _resume_config=ResumeConfig(
                unfinished=cast(Any, ResumeConfig.ResumeType.RESUME),
                errored=cast(Any, ResumeConfig.ResumeType.SKIP),
            ),
        )
    metric, mode = f"val_{opts.base.train.monitor}", opts.base.train.monitor_mode
    common: dict[str, Any] = {
        "metric": metric,
        "mode": mode,
        "max_concurrent_trials": concurrency,
        "time_budget_s": opts.time_budget_s,
        "trial_dirname_creator": trial_dirname,
    }
    callbacks = [callback]
    if opts.strategy == "grid":
        tune_config = tune.TuneConfig(num_samples=1, **common)
        param_space: dict[str, Any] = {k: tune.grid_search(v) for k, v in opts.grid.items()}
    else:
        from i2m2_ray.tuning.callback import SchedulerState

        searcher = _search_alg(opts, space, metric, mode)
        if opts.search.pruner is not None:
            from i2m2_ray.tuning.tune_pruning import OptunaPruning

            scheduler = OptunaPruning(searcher, metric, opts.base.product.epochs)
        else:
            scheduler = _scheduler(opts)
        callbacks.append(SchedulerState(scheduler))  # ASHA's rungs survive --resume
        tune_config = tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=opts.trials,
            **common,
        )
        param_space = {}
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=opts.sweep_name,
            storage_path=opts.storage,
            callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=1,
        ),
    )


def complete_best_checkpoint(report: Report, prepared: PreparedData, base: ExperimentConfig) -> None:
    """Make the best trial's checkpoint (``report/best_checkpoint/model.pt``) enough to predict
    with, as a pipeline's models are (:func:`i2m2_ray.predict.prediction_state`: preprocessing
    state, input facts, class names, training-split input means). A best trial whose data
    settings differ from the sweep's (it sampled ``data.*`` keys) read other inputs than
    ``prepared`` describes: its checkpoint is left without, and a line says how to get one."""
    path = report.artifacts.get("best_checkpoint")
    if path is None or report.best_plan is None:
        return
    if report.best_plan.config.to_dict()["data"] != base.to_dict()["data"]:
        print(
            "note: the best trial read its data with its own data.* settings: its checkpoint carries no prediction "
            "state; to predict, train its best_config.yaml with the pipeline",
            flush=True,
        )
        return
    from i2m2_ray.predict import add_prediction_state, prediction_state, training_input_stats
    from i2m2_ray.training.checkpoint import MODEL_FILE

    stats = training_input_stats(prepared, base.evaluation.stats_samples, base.train.batch_size)
    add_prediction_state(Path(path) / MODEL_FILE, prediction_state(base.experiment, prepared, stats))


def run_sweep(opts: SweepOptions, prepared: PreparedData) -> SweepResult:
    """Run (or resume) a sweep on the connected Ray cluster and record it in MLflow.

    The parent run ends FINISHED, or KILLED when the sweep was interrupted (resume it with
    the same output dir and ``resume=True``), or FAILED on an error; no child run is left
    RUNNING.
    """
    import ray
    from ray import tune

    from i2m2_ray.tuning.callback import TrialTracker

    cfg = opts.base
    monitor, mode = cfg.train.monitor, cfg.train.monitor_mode
    metric = f"val_{monitor}"
    space = opts.search.space.bind(cfg, prepared.spec)
    recipe = TrialRecipe(space=space, base=cfg.to_dict())
    check_space(recipe)
    if opts.strategy == "grid":
        for combo in _grid_combinations(opts.grid):
            recipe.plan(combo)  # every grid point must be a valid trial
    # before anything starts: not even one trial fitting the cluster is an error now
    concurrency = trial_concurrency(opts.max_concurrent, ray.cluster_resources(), cfg, opts.trials)
    if opts.fits_at_once is None:  # not planned by the caller: the components as the cluster holds them
        opts.fits_at_once = trial_concurrency(max(opts.max_concurrent, 3), ray.cluster_resources(), cfg, 1 << 30)
    concurrency = min(concurrency, opts.fits_at_once)
    uri = opts.tracking_uri or tracking.default_tracking_uri(opts.output_dir)
    path = opts.experiment_path
    restore = opts.resume and tune.Tuner.can_restore(path)
    if opts.resume and not restore:
        print(f"no trial state saved at {path} yet: the trials start afresh", flush=True)
    data = sweep_data(opts)
    if opts.resume:
        differs = fingerprint_mismatch(read_state(opts.state_path).get("data") or data, data)
        if differs:
            raise ConfigError(
                f"--resume: the data differ from the sweep's in {opts.sweep_dir}: {differs}; resume with the data "
                "it started with, or start afresh with --overwrite"
            )
    elif sweep_exists(opts) or tune.Tuner.can_restore(path):
        if not opts.overwrite:
            raise ConfigError(sweep_exists_message(opts))
        for gone in discard_sweep(opts):  # every check passed: the earlier sweep goes now
            print(f"--overwrite: removed {gone}", flush=True)
    opts.sweep_dir.mkdir(parents=True, exist_ok=True)
    exp_id, parent = _start_or_reopen_parent(opts, uri)
    if not opts.resume:
        save_sweep_state(opts, exp_id, parent, uri, data)
    status = "FAILED"
    try:
        components: dict[str, str] = {}
        if _needs_components(space, cfg):
            components = fit_components(opts, prepared, uri, exp_id, parent)
        ctx = SweepContext(
            experiment=opts.experiment,
            recipe=recipe,
            prepared=prepared,
            data_dir=opts.data_dir,
            annotations=opts.annotations,
            work_dir=str(opts.sweep_dir),
            components=components,
            train_storage=opts.train_storage,
        )
        trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), TRIAL_DRIVER_RESOURCES)
        print(
            f"sweep '{opts.sweep_name}': {opts.trials} trials, {concurrency} at a time, {opts.strategy}; "
            f"objective {metric} ({mode}); storage {path}",
            flush=True,
        )
        hint = f"{path} and {opts.sweep_dir / 'report'}"
        callback = TrialTracker(uri, exp_id, parent, recipe, opts.sweep_name, hint)
        tuner = _tuner(opts, trainable, restore, callback, space, concurrency)
        t0 = time.perf_counter()
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        rows = trial_rows(grid, monitor, mode)
        if opts.time_budget_s is not None and wall >= opts.time_budget_s * 0.95:
            # the trials the time budget cut short are stopped, not interrupted
            for r in rows:
                r.status = "stopped" if r.status == "unfinished" else r.status
            _close_open_runs(uri, exp_id, parent, "KILLED", outcome="time_budget")
        _reconcile(uri, exp_id, parent, rows)
        recurring_failure(rows)
        interrupted = any(r.status == "unfinished" for r in rows)
        report = write_report(
            rows,
            recipe,
            opts.sweep_dir / "report",
            experiment=opts.experiment,
            sweep_name=opts.sweep_name,
            mode=mode,
            optuna_storage=opts.optuna_storage,
        )
        complete_best_checkpoint(report, prepared, opts.base)
        log_report(report, rows, uri, exp_id, parent, opts.search.path)
        status = "KILLED" if interrupted else "FINISHED"
        return SweepResult(
            rows=rows,
            best=report.best,
            best_plan=report.best_plan,
            parent_run_id=parent,
            tracking_uri=uri,
            experiment_path=path,
            interrupted=interrupted,
            total_epochs=report.total_epochs,
            importance=report.importance,
            artifacts=report.artifacts,
        )
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            _close_open_runs(uri, exp_id, parent, "KILLED")
            tracking.end_run(uri, parent, status)
        except Exception as exc:
            print(f"WARNING: could not close the MLflow runs ({type(exc).__name__}: {exc})", flush=True)
