"""A sweep: Optuna (TPE) proposes, ASHA stops, Ray Train trains every trial, MLflow records it.

:func:`run_sweep` runs (or resumes) one on the connected Ray cluster: the components the
trials may start from (the pipeline's stage 1, once per sweep), the Tune run of the trials
(:mod:`i2m2_ray.tuning.trial`, recorded by :mod:`i2m2_ray.tuning.callback`), and the report
(:mod:`i2m2_ray.tuning.report`). ``search/<name>/sweep.json`` keeps what ``--resume`` needs.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from i2m2_ray import tracking
from i2m2_ray.config import ConfigError, ExperimentConfig, load_config
from i2m2_ray.spec import component_paradigm
from i2m2_ray.tuning.report import SweepResult, TrialRow, log_report, trial_rows, write_report
from i2m2_ray.tuning.space import SearchFile, SearchSpace, TrialRecipe, check_space, parse_search_file
from i2m2_ray.tuning.trial import TRIAL_DRIVER_RESOURCES, SweepContext, run_trial, trial_dirname

if TYPE_CHECKING:
    from i2m2_ray.data.base import PreparedData

TRIAL_OUTCOMES = {"completed": "completed", "stopped": "stopped_early", "error": "error"}


@dataclass
class SweepOptions:
    """One sweep: what to search, how many trials, and where everything goes."""

    experiment: str
    search: SearchFile
    base: ExperimentConfig
    output_dir: Path
    trials: int
    max_concurrent: int
    time_budget_s: float | None = None
    name: str | None = None
    storage_path: str | None = None
    tracking_uri: str | None = None
    data_dir: str | None = None
    annotations: str | None = None
    resume: bool = False
    strategy: str = "optuna-asha"  # or "grid": every combination of ``grid``, no early stopping
    grid: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def sweep_name(self) -> str:
        return self.name or f"search-{self.experiment}"

    @property
    def sweep_dir(self) -> Path:
        """``search/<name>/`` in the output directory: state, components, report."""
        return self.output_dir / "search" / self.sweep_name

    @property
    def storage(self) -> str:
        """Where Tune and the trials' Ray Train runs keep their results."""
        return self.storage_path or str(self.output_dir / "ray_results")

    @property
    def experiment_path(self) -> str:
        """The Tune experiment's folder (what ``Tuner.restore`` reads)."""
        return f"{self.storage.rstrip('/')}/{self.sweep_name}"

    @property
    def train_storage(self) -> str:
        """Where the Ray Train runs of the trials and components go."""
        return f"{self.storage.rstrip('/')}/{self.sweep_name}-train"

    @property
    def state_path(self) -> Path:
        return self.sweep_dir / "sweep.json"


# --------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------


def trial_concurrency(requested: int, resources: Mapping[str, float], cfg: ExperimentConfig, trials: int) -> int:
    """How many trials run at once: ``requested``, capped by what the cluster holds.

    A trial needs ``num_workers * cpus_per_worker`` CPUs (and ``num_workers`` GPUs with
    ``use_gpu``); one CPU is kept for the Ray Data pipelines that feed the trials.
    """
    per_trial = cfg.run.num_workers * cfg.run.cpus_per_worker
    cpus = float(resources.get("CPU", 0.0))
    cap = int((cpus - 1) // per_trial) if cpus - 1 >= per_trial else 1
    if cfg.run.use_gpu:
        gpus = float(resources.get("GPU", 0.0))
        gpu_cap = int(gpus // cfg.run.num_workers)
        if gpu_cap < 1:
            raise ConfigError(
                f"run.use_gpu=true with run.num_workers={cfg.run.num_workers}, but the cluster has {gpus:g} GPU(s)"
            )
        cap = min(cap, gpu_cap)
    return max(1, min(requested, cap, trials))


# --------------------------------------------------------------------------------------
# Sweep state: the parent run, sweep.json, resume
# --------------------------------------------------------------------------------------


def _start_or_reopen_parent(opts: SweepOptions, uri: str) -> tuple[str, str]:
    """(experiment id, parent run id): a new parent run, or the saved one on resume."""
    exp_id = tracking.get_experiment_id(uri, f"{opts.experiment}-search", opts.output_dir / "mlartifacts")
    if opts.resume:
        saved = json.loads(opts.state_path.read_text())
        parent = saved["parent_run_id"]
        if tracking.get_run(uri, parent).status != "RUNNING":
            tracking.reopen_run(uri, parent)
        tracking.set_tag(uri, parent, "resumed", str(int(saved.get("resumes", 0)) + 1))
        saved["resumes"] = int(saved.get("resumes", 0)) + 1
        opts.state_path.write_text(json.dumps(saved, indent=2))
        return str(saved["experiment_id"]), str(parent)
    parent = tracking.start_run(
        uri,
        exp_id,
        opts.sweep_name,
        tags={"dataset": opts.experiment, "stage": "search", "strategy": opts.strategy},
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
        },
    )
    return exp_id, parent


def save_sweep_state(opts: SweepOptions, exp_id: str, parent: str, uri: str) -> None:
    """What ``--resume`` needs to rebuild the same sweep: its definition and its runs."""
    state = {
        "experiment": opts.experiment,
        "name": opts.sweep_name,
        "experiment_id": exp_id,
        "parent_run_id": parent,
        "tracking_uri": uri,
        "search_file": str(opts.search.path),
        "search": opts.search.raw,
        "base": opts.base.to_dict(),
        "trials": opts.trials,
        "max_concurrent": opts.max_concurrent,
        "time_budget_s": opts.time_budget_s,
        "strategy": opts.strategy,
        "grid": opts.grid,
        "data_dir": opts.data_dir,
        "annotations": opts.annotations,
        "storage_path": opts.storage,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    opts.state_path.parent.mkdir(parents=True, exist_ok=True)
    opts.state_path.write_text(json.dumps(state, indent=2))


def load_sweep_options(output_dir: Path, name: str, **changes: Any) -> SweepOptions:
    """The options of a sweep saved in ``output_dir`` (for ``--resume``)."""
    path = output_dir / "search" / name / "sweep.json"
    if not path.is_file():
        raise ConfigError(f"no sweep '{name}' to resume in {output_dir} (missing {path})")
    s = json.loads(path.read_text())
    search = parse_search_file(s["search"], Path(s["search_file"]))
    opts = SweepOptions(
        experiment=s["experiment"],
        search=search,
        base=load_config(None, [], base=s["base"]),
        output_dir=output_dir,
        trials=int(s["trials"]),
        max_concurrent=int(s["max_concurrent"]),
        time_budget_s=s.get("time_budget_s"),
        name=name,
        storage_path=s.get("storage_path"),
        tracking_uri=s.get("tracking_uri"),
        data_dir=s.get("data_dir"),
        annotations=s.get("annotations"),
        resume=True,
        strategy=s.get("strategy", "optuna-asha"),
        grid=dict(s.get("grid") or {}),
    )
    return dataclasses.replace(opts, **changes)


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
        opts.base, prepared, folder, storage_path=opts.train_storage, run_suffix=opts.sweep_name, tracker=tracker
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
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    # TPE samples at random for its first n_startup_trials (10 by default): a short sweep
    # would never get past them, so it starts modelling after a quarter of the trials
    startup = max(2, min(10, opts.trials // 4))
    sampler = optuna.samplers.TPESampler(seed=opts.base.run.seed, n_startup_trials=startup)
    return OptunaSearch(space=space, metric=metric, mode=mode, sampler=sampler)


def _scheduler(opts: SweepOptions) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    epochs = opts.base.product.epochs
    asha = opts.search.asha
    if asha.grace_period >= epochs:
        raise ConfigError(
            f"asha.grace_period ({asha.grace_period}) must be below product.epochs ({epochs}), "
            "or ASHA can never stop a trial"
        )
    # Rungs strictly before the last epoch: a trial that reaches its last epoch is never
    # stopped there, so it always gets to score the test split.
    return ASHAScheduler(
        time_attr="epoch",
        max_t=max(asha.grace_period, epochs - 1),
        grace_period=asha.grace_period,
        reduction_factor=asha.reduction_factor,
        stop_last_trials=False,
    )


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
    if opts.strategy == "grid":
        tune_config = tune.TuneConfig(num_samples=1, **common)
        param_space: dict[str, Any] = {k: tune.grid_search(v) for k, v in opts.grid.items()}
    else:
        tune_config = tune.TuneConfig(
            search_alg=_search_alg(opts, space, metric, mode),
            scheduler=_scheduler(opts),
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
            callbacks=[callback],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=1,
        ),
    )


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
    opts.sweep_dir.mkdir(parents=True, exist_ok=True)
    uri = opts.tracking_uri or tracking.default_tracking_uri(opts.output_dir)
    path = opts.experiment_path
    restore = opts.resume and tune.Tuner.can_restore(path)
    if opts.resume and not restore:
        print(f"no trial state saved at {path} yet: the trials start afresh", flush=True)
    if not opts.resume and (opts.state_path.exists() or tune.Tuner.can_restore(path)):
        raise ConfigError(
            f"a sweep named '{opts.sweep_name}' already exists in {opts.output_dir}; "
            "continue it with --resume, or start another with --name"
        )
    exp_id, parent = _start_or_reopen_parent(opts, uri)
    if not opts.resume:
        save_sweep_state(opts, exp_id, parent, uri)
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
        concurrency = trial_concurrency(opts.max_concurrent, ray.cluster_resources(), cfg, opts.trials)
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
        interrupted = any(r.status == "unfinished" for r in rows)
        report = write_report(
            rows, recipe, opts.sweep_dir / "report", experiment=opts.experiment, sweep_name=opts.sweep_name, mode=mode
        )
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
