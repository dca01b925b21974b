"""The experiment pipeline: fit components concurrently, fine-tune products, compare.

Stage 1 fits ``unimodal_<m>`` for every modality and ``inter`` at the same time, each its
own Ray Train run. Stage 2 trains ``intra`` and ``i2m2`` (from the stage-1 checkpoints, or
from scratch). Then every checkpoint gets what prediction needs (:mod:`i2m2_ray.predict`)
and goes to its child run, as a file and as an MLflow (pyfunc) model. Every model is evaluated on
the test split; results go to ``summary.json`` and to MLflow (a parent run, a child run per
model).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from i2m2_ray import tracking
from i2m2_ray.assess import Assessment, assess_models, robustness_reports, settings_of
from i2m2_ray.config import ConfigError, ExperimentConfig
from i2m2_ray.data.base import DataError, PreparedData
from i2m2_ray.files import (
    StateFileError,
    atomic_write_json,
    atomic_write_text,
    data_fingerprint,
    fingerprint_mismatch,
    read_json,
)
from i2m2_ray.placement import Placement
from i2m2_ray.rundir import (
    RESUME_REMEDY,
    STATE_FILE,
    RunDirError,
    check_output_dir,
    comparable,
    config_changes,
    data_paths,
    discard_earlier_run,
)
from i2m2_ray.spec import I2M2, INTER, INTER_EXTENDED, PRODUCTS, component_paradigm, kind_of
from i2m2_ray.training.checkpoint import CheckpointError, load_checkpoint
from i2m2_ray.training.cores import CoreShare
from i2m2_ray.training.launch import RECURRING, FitRequest, FitResult, fit_concurrently

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    summary: dict[str, dict[str, float]]
    output_dir: Path
    tracking_uri: str
    parent_run_id: str


def models_to_fit(cfg: ExperimentConfig, prepared: PreparedData) -> tuple[list[str], list[str]]:
    """(stage-1 components, stage-2 products) asked for by ``run.paradigms``; components that
    a product initialises from are fitted even if not asked for."""
    spec = prepared.spec
    wanted = set(cfg.run.paradigms)
    products = [p for p in PRODUCTS if p in wanted]
    components = [p for p in spec.paradigms() if p not in PRODUCTS and kind_of(p) in wanted]
    if cfg.product.init == "components":
        for product in products:
            for expert in spec.components(product):
                name = component_paradigm(expert)
                if name not in components:
                    components.append(name)
    return components, products


def comparison_table(summary: dict[str, dict[str, float]], columns: Sequence[str]) -> str:
    """A plain-text table: one row per model, the given metric columns and wall time."""
    header = ["model", *columns, "wall_s"]
    rows = [header]
    for name, m in summary.items():
        rows.append([name, *[f"{m.get(c, float('nan')):.4f}" for c in columns], f"{m.get('wall_seconds', 0):.0f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class PipelineError(RunDirError):
    """The pipeline cannot start or resume as asked; the message says why and what to do."""


class Pipeline:
    """Runs the two stages for one prepared dataset and records everything.

    Each finished model leaves ``results/<model>.json`` (+ test predictions) and
    ``checkpoints/<model>.pt`` in the output directory. With ``resume=True`` (the
    ``--resume`` flag, same output directory, config and data) finished models are reused
    and an interrupted Ray Train run continues from its last epoch checkpoint (same run
    name). An output directory that holds an earlier run is refused unless ``resume`` or
    ``overwrite`` (which discards it, once every check has passed, when :meth:`run` starts).
    ``placement``: what the cluster was planned to hold (:func:`i2m2_ray.placement.plan`):
    models in flight at once, and the ``placement`` param of the MLflow runs.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        prepared: PreparedData,
        output_dir: str | Path,
        tracking_uri: str | None = None,
        storage_path: str | None = None,
        resume: bool = False,
        overwrite: bool = False,
        placement: Placement | None = None,
        register: str | None = None,
        core_share: CoreShare | None = None,
    ) -> None:
        self.cfg = cfg
        self.register = register  # the registered-model name the I2M2 model gets (None: none)
        # the training split's input statistics (InputStats), computed once by _complete_models
        # for the checkpoints' prediction state and reused by stage 3
        self.input_stats: Any = None
        self.data = prepared
        self.out = Path(output_dir).resolve()
        check_output_dir(self.out, resume, overwrite)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results_dir = self.out / "results"
        self.uri = tracking_uri or tracking.default_tracking_uri(self.out)
        self.storage = storage_path or str(self.out / "ray_results")
        self.overwrite = overwrite
        self.fresh = not resume
        self.placement = placement
        self.state = self._resumed_state() if resume else self._new_state()
        self.tracker = tracking.Tracker(self.uri, f"{self.results_dir} and {self.out / 'summary.json'}")
        self.stages = StageFitter(
            cfg,
            prepared,
            self.out,
            storage_path=self.storage,
            run_suffix=self.state["id"],
            tracker=self.tracker,
            max_in_flight=placement.models_at_once if placement else None,
            placement=placement.describe() if placement else None,
            log_checkpoints=False,  # logged once they carry the prediction state (_complete_models)
            core_share=core_share,
        )

    def _fingerprint(self) -> dict[str, Any]:
        return data_fingerprint(data_paths(self.cfg, self.out), base=self.out)

    def _new_state(self) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex[:8],
            "config": self.cfg.to_dict(),
            "data": self._fingerprint(),
            "parent_run_id": None,
        }

    def _resumed_state(self) -> dict[str, Any]:
        path = self.out / STATE_FILE
        remedy = RESUME_REMEDY
        try:
            state = read_json(path, "the state of the run to resume", remedy)
        except StateFileError as exc:
            raise PipelineError(str(exc)) from None
        if not isinstance(state, dict) or not {"id", "config"} <= set(state):
            raise PipelineError(f"{path}: not a pipeline state (expected keys id, config); {remedy}")
        if "data" in state:
            differs = fingerprint_mismatch(state["data"], self._fingerprint())
            if differs:
                raise PipelineError(
                    f"--resume: the data differ from the run in {self.out}: {differs}; resume with the data it "
                    f"started with, or {remedy}"
                )
        config = self.cfg.to_dict()
        changes = config_changes(comparable(state["config"]), comparable(config))
        if changes:
            raise PipelineError(
                f"--resume: the config differs from the one in {path} ({'; '.join(changes[:5])}); resume with "
                "the same config and options, or use another --output-dir"
            )
        state["config"] = config  # placement may differ: what this session runs with
        return state

    def _save_state(self) -> None:
        atomic_write_json(self.out / STATE_FILE, self.state)

    def _begin(self) -> None:
        """A fresh run: discard the earlier one (``overwrite``), then write the state."""
        if self.fresh and self.overwrite:
            for gone in discard_earlier_run(self.out, self.storage):
                print(f"--overwrite: removed {gone}", flush=True)
        self._save_state()

    def _start_parent(self) -> tuple[str | None, str | None]:
        cfg = self.cfg
        exp_id = self.tracker.call(tracking.get_experiment_id, cfg.experiment, self.out / "mlartifacts")
        if exp_id is None:
            return None, None
        old = self.state.get("parent_run_id")
        if old:  # resuming: the lost driver's runs are closed as KILLED
            self.tracker.call(tracking.kill_stale_runs, exp_id, old)
        tags = {"dataset": cfg.experiment, "stage": "pipeline", **tracking.provenance()}
        if old:
            tags["resumed_from"] = old
        study = os.environ.get(tracking.STUDY_RUN_ENV) or None  # one seed of experiments/study.py
        parent = self.tracker.call(
            tracking.start_run,
            exp_id,
            f"{cfg.experiment}-seed{cfg.run.seed}",
            tags=tags,
            params={
                **cfg.to_dict(),
                "data_info": self.data.info,
                "sizes": self.data.sizes,
                "placement": self.placement.describe() if self.placement else "not planned",
            },
            parent_run_id=study,
        )
        if parent is not None:
            self.state["parent_run_id"] = parent
            self._save_state()
            # the experiment's saved view: this run's models side by side on the main metrics
            self.tracker.call(tracking.save_comparison_view, exp_id, parent, cfg.report.metrics)
            # the resolved config, whole: what --from-run (or --config) runs again
            self.tracker.call(tracking.log_artifact, parent, self.out / tracking.CONFIG_ARTIFACT)
        return exp_id, parent

    def _write_config(self) -> Path:
        """``config.yaml`` in the output folder: the resolved config (a run's ``--config``)."""
        import yaml

        text = yaml.safe_dump(self.cfg.to_dict(), sort_keys=False)
        return atomic_write_text(self.out / tracking.CONFIG_ARTIFACT, text)

    def run(self) -> PipelineResult:
        cfg = self.cfg
        self._begin()
        self._write_config()
        exp_id, parent = self._start_parent()
        t0 = time.perf_counter()
        try:
            components, products = models_to_fit(cfg, self.data)
            print(f"stage 1: fitting {components} concurrently", flush=True)
            results = self.stages.fit("components", components, exp_id, parent, {})
            init_for: dict[str, dict[str, str]] = {}
            if cfg.product.init == "components":
                for p in products:
                    init_for[p] = {e: results[component_paradigm(e)].checkpoint for e in self.data.spec.components(p)}
            if products and cfg.evaluation.inter_extended and INTER in results:
                products = [*products, INTER_EXTENDED]  # the products' compute-matched control
                init_for[INTER_EXTENDED] = {INTER: results[INTER].checkpoint}
            if products:
                print(f"stage 2: training {products} ({cfg.product.init} init)", flush=True)
                results.update(self.stages.fit("products", products, exp_id, parent, init_for))
            order = [p for p in self.data.spec.paradigms() if p in results]
            if INTER_EXTENDED in results:  # beside inter
                order.insert(order.index(INTER) + 1, INTER_EXTENDED)
            self._complete_models(results)
            assessed = self._assess({n: results[n] for n in order}, parent)
            summary = {n: {**summary_entry(results[n]), **assessed.entries.get(n, {})} for n in order}
            summary_path = atomic_write_json(self.out / "summary.json", summary)  # paradigms in order
            tables = self._write_comparison(summary)
            if parent is not None:
                # the parent keeps the comparison: the report's test metrics, the main one's
                # interval, wall time; everything else is on the children
                main = cfg.report.metrics[0]
                keep = (*cfg.report.metrics, f"{main}_ci_low", f"{main}_ci_high", "wall_seconds")
                for n, m in summary.items():
                    self.tracker.call(tracking.log_metrics, parent, {f"{n}.{k}": m[k] for k in keep if k in m})
                self.tracker.call(tracking.log_metrics, parent, {"pipeline_wall_seconds": time.perf_counter() - t0})
                for path in (summary_path, *tables):
                    self.tracker.call(tracking.log_artifact, parent, path)
                self.stages.end(parent, "FINISHED")
        except BaseException:
            self.stages.end(parent, "FAILED")
            raise
        return PipelineResult(summary, self.out, self.tracker.uri or "", parent or "")

    def _write_comparison(self, summary: dict[str, dict[str, float]]) -> tuple[Path, Path]:
        """``comparison.csv`` and ``comparison.md`` in the output folder (the parent run's
        comparison, :mod:`i2m2_ray.evaluation.tables`)."""
        from i2m2_ray.evaluation.tables import comparison_csv, comparison_markdown

        metrics, cfg = self.cfg.report.metrics, self.cfg
        title = f"{cfg.experiment}, seed {cfg.run.seed}: test metrics"
        return (
            atomic_write_text(self.out / "comparison.csv", comparison_csv(summary, metrics)),
            atomic_write_text(self.out / "comparison.md", comparison_markdown(summary, metrics, title)),
        )

    def _complete_models(self, results: dict[str, FitResult]) -> None:
        """Make every checkpoint enough to predict with (:func:`i2m2_ray.predict.prediction_state`:
        the preprocessing state, input facts, class names and the training-split input means,
        computed once here), then log it to its child run, as a file and as an MLflow model
        (``--register``: the I2M2 model registered under that name). An MLflow model costs
        about 0.2 s to log (2 s for the first, importing MLflow's model code): every model
        gets one."""
        from i2m2_ray.predict import add_prediction_state, log_pyfunc_model, prediction_state, training_input_stats

        cfg = self.cfg
        t0 = time.perf_counter()
        stats = training_input_stats(self.data, cfg.evaluation.stats_samples, cfg.train.batch_size)
        self.input_stats = stats  # stage 3's missing-modality fill and noise scale
        state = prediction_state(cfg.experiment, self.data, stats)
        for res in results.values():
            add_prediction_state(res.checkpoint, state)
        example: dict[str, Any] = {}
        for name, run_id in self.stages.run_ids.items():
            if run_id is None or name not in results:
                continue
            self.tracker.call(tracking.log_artifact, run_id, results[name].checkpoint, "checkpoint")
            if not example:  # two test samples: the MLflow models' input example
                batch = self.data.datasets["test"].take_batch(2, batch_format="numpy")
                example = {m: batch[m] for m in self.data.spec.modalities}
            register = self.register if name == I2M2 else None
            self.tracker.call(log_pyfunc_model, run_id, results[name].checkpoint, example, register)
        print(f"models: prediction state in every checkpoint, logged in {time.perf_counter() - t0:.1f} s", flush=True)

    def _assess(self, results: dict[str, FitResult], parent: str | None) -> Assessment:
        """Stage 3: every model's calibration and bootstrap intervals (from its saved test
        predictions), and its test metrics with each modality missing or noisy (a Ray task
        per model, from its best weights); the curves go to ``assessment.json``, the
        reliability diagrams to the child runs, the comparison figures to the parent."""
        cfg = self.cfg
        settings = settings_of(cfg)
        what = "intervals, calibration" + (", missing and noisy modalities" if settings.robustness else "")
        print(f"stage 3: assessing {list(results)} ({what})", flush=True)
        t0 = time.perf_counter()
        checkpoints = {n: r.checkpoint for n, r in results.items()}
        reports = (
            robustness_reports(checkpoints, self.data, cfg, settings, self.input_stats) if settings.robustness else {}
        )
        found = assess_models(
            {n: (r.test_labels, r.test_probs) for n, r in results.items()},
            {n: r.test for n, r in results.items()},
            reports,
            settings,
            cfg.report.metrics,
            self.out / "plots",
            cfg.experiment,
        )
        atomic_write_json(self.out / "assessment.json", {"settings": asdict(settings), "robustness": found.reports})
        print(f"stage 3: done in {time.perf_counter() - t0:.0f} s", flush=True)
        for name, run_id in self.stages.run_ids.items():
            if run_id is None or name not in found.entries:
                continue
            self.tracker.call(tracking.log_metrics, run_id, {f"test_{k}": v for k, v in found.entries[name].items()})
            for fig in found.figures.get(name, []):
                self.tracker.call(tracking.log_artifact, run_id, fig, "plots")
        if parent is not None:
            for fig in found.figures[""]:
                self.tracker.call(tracking.log_artifact, parent, fig, "plots")
            self.tracker.call(tracking.log_artifact, parent, self.out / "assessment.json")
        return found


class StageFitter:
    """Fits one stage's models concurrently into a folder and records them.

    Each finished model leaves ``results/<model>.json`` (+ test predictions),
    ``checkpoints/<model>.pt`` and ``plots/roc_<model>.png`` in ``folder``; a model already
    in ``results/`` is reused, not fitted again. Ray Train runs are named
    ``<model>-<run_suffix>`` under ``storage_path``: the same suffix continues an interrupted
    run from its last epoch. Given an MLflow experiment and parent run, each model gets a
    child run (epochs, test metrics, checkpoint, ROC plot), written through ``tracker``, so
    a tracking failure never stops the fits.

    At most ``max_in_flight`` fits run at once (the placement's bound; the rest queue), and
    ``placement`` (what the placement changed) is a param of every child run. With a
    ``core_share`` (a local Ray, ``run.deterministic: false``) the fits' workers take the
    cores that finished fits left idle (:mod:`i2m2_ray.training.cores`).

    The pipeline's two stages use it, and so do sweeps, for the components their trials
    start from.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        prepared: PreparedData,
        folder: str | Path,
        *,
        storage_path: str,
        run_suffix: str,
        tracker: tracking.Tracker,
        max_in_flight: int | None = None,
        placement: str | None = None,
        log_checkpoints: bool = True,
        core_share: CoreShare | None = None,
    ) -> None:
        self.cfg = cfg
        self.data = prepared
        self.core_share = core_share
        self.log_checkpoints = log_checkpoints  # False: the caller logs them later
        self.out = Path(folder).resolve()
        self.results_dir = self.out / "results"
        self.storage = storage_path
        self.run_suffix = run_suffix
        self.tracker = tracker
        self.run_ids: dict[str, str | None] = {}  # model -> its child run (None: not tracked)
        self.max_in_flight = max_in_flight
        self.placement = placement

    def finished(self, name: str) -> bool:
        """Whether model ``name`` was fitted earlier (its results are in ``results/``)."""
        return (self.results_dir / f"{name}.json").is_file()

    def _request(self, name: str, run_id: str | None, init: dict[str, str]) -> FitRequest:
        req = FitRequest.from_config(
            self.cfg,
            self.data,
            INTER if name == INTER_EXTENDED else name,  # the control is an inter expert
            name=name,
            storage_path=self.storage,
            checkpoint_path=self.out / "checkpoints" / f"{name}.pt",
            run_name=f"{name}-{self.run_suffix}",
            init_checkpoints=init,
            tracking_uri=self.tracker.uri,
            run_id=run_id,
            assess_test_sets=True,  # stage 3 of the extra test sets (VQA-VS's OOD sets)
        )
        if self.core_share is not None:
            req.loop.core_share = self.core_share.folder
        return req

    def _record(self, run_id: str | None, res: FitResult, history: bool) -> None:
        """Test metrics, checkpoint and ROC plot of one model to its child run."""
        record(self.tracker.call, self.out, run_id, res, history, self.log_checkpoints)

    def fit(
        self,
        stage: str,
        names: list[str],
        exp_id: str | None,
        parent: str | None,
        init_for: dict[str, dict[str, str]],
        reused_runs: bool = True,
    ) -> dict[str, FitResult]:
        """Fit ``names`` concurrently (reusing finished ones); every child run ends FINISHED
        or FAILED. ``reused_runs``: whether a reused model gets a child run of its own (under
        a new parent run, as a resumed pipeline's), or none (its run, under the same parent,
        was recorded when it was fitted)."""
        runs: dict[str, str | None] = {}
        todo: dict[str, FitRequest] = {}
        results: dict[str, FitResult] = {}
        for name in names:
            done = self.finished(name)
            tags = {"dataset": self.cfg.experiment, "paradigm": name, "stage": stage}
            if done:
                tags["reused"] = "true"  # finished before the driver was lost
            runs[name] = None
            if exp_id is not None and (reused_runs or not done):
                runs[name] = self.tracker.call(
                    tracking.start_run,
                    exp_id,
                    name,
                    tags=tags,
                    params={
                        **self.cfg.to_dict(),
                        "paradigm": name,
                        "init": init_for.get(name, {}),
                        "placement": self.placement or "not planned",
                    },
                    parent_run_id=parent,
                )
            if done:
                print(f"{name}: finished earlier, reusing {self.results_dir / name}.json", flush=True)
                results[name] = self._reuse(name)
                self._record(runs[name], results[name], history=True)
                self.end(runs[name], "FINISHED")
                continue
            todo[name] = self._request(name, runs[name], init_for.get(name, {}))
        self.run_ids.update(runs)
        errors: dict[str, Exception] = {}
        for name, res in fit_concurrently(todo, self.max_in_flight, self.core_share):
            if isinstance(res, Exception):
                self.end(runs[name], "FAILED")
                errors[name] = res
                continue
            res.save(self.results_dir)
            self._record(runs[name], res, history=False)
            self.end(runs[name], "FINISHED")
            results[name] = res
        if errors:
            raise stage_error(stage, errors)
        return results

    def _reuse(self, name: str) -> FitResult:
        """A model finished earlier: its saved result, with its checkpoint checked (the
        products load it); a damaged file is named."""
        try:
            res = FitResult.load(self.results_dir, name)
            load_checkpoint(res.checkpoint, paradigm=res.paradigm)
        except CheckpointError as exc:
            raise PipelineError(f"{exc}; delete {self.results_dir / name}.json to fit '{name}' again") from None
        except StateFileError as exc:
            raise PipelineError(str(exc)) from None
        return res

    def end(self, run_id: str | None, status: str) -> None:
        """End run ``run_id`` (nothing when there is none)."""
        if run_id is not None:
            self.tracker.call(tracking.end_run, run_id, status)


def stage_error(stage: str, errors: dict[str, Exception]) -> Exception:
    """One error for a stage's failed fits: of the class of an error that would recur (bad
    data or config: the command exits 2), with every fit's message."""
    message = f"stage '{stage}' failed: " + "; ".join(f"{n}: {e}" for n, e in errors.items())
    for e in errors.values():
        if isinstance(e, RECURRING):
            return (DataError if isinstance(e, DataError) else ConfigError)(message)
    return RuntimeError(message)


def record(call: Any, out: Path, run_id: str | None, res: FitResult, history: bool, checkpoint: bool = True) -> None:
    """A finished model's ROC plot (``plots/roc_<model>.png``) and, on its child run, its test
    metrics, wall time, best epoch and epochs run, checkpoint and plot; ``history`` also logs
    its per-epoch metrics (for a model reused from disk or uploaded after the fact, whose
    epochs were not logged live); ``checkpoint`` False leaves the checkpoint out.
    ``call(fn, *args)`` runs an MLflow write (:meth:`tracking.Tracker.call`, or a plain call
    with the tracking URI bound)."""
    from i2m2_ray.plots import roc_figure

    fig = roc_figure(res.test_labels, res.test_probs, f"{res.name}: test ROC", out / "plots" / f"roc_{res.name}.png")
    if run_id is None:
        return
    if history:
        for h in res.history:
            call(tracking.log_metrics, run_id, {k: v for k, v in h.items() if k != "epoch"}, int(h.get("epoch", 0)))
    call(tracking.log_metrics, run_id, {f"test_{k}": v for k, v in res.test.items()})
    call(
        tracking.log_metrics,
        run_id,
        {"wall_seconds": res.wall_seconds, "best_epoch": res.best_epoch, "epochs_run": res.epochs_run},
    )
    if checkpoint and Path(res.checkpoint).is_file():
        call(tracking.log_artifact, run_id, res.checkpoint, "checkpoint")
    call(tracking.log_artifact, run_id, fig, "plots")


def summary_entry(res: FitResult) -> dict[str, float]:
    """One model's line of ``summary.json``: test metrics, training time, placement."""
    return {
        **res.test,
        "wall_seconds": res.wall_seconds,
        "best_epoch": float(res.best_epoch),
        "num_nodes": float(len(set(res.worker_nodes))),
    }


def upload(output_dir: str | Path, tracking_uri: str | None = None) -> str:
    """Log a finished pipeline's saved results (``results/``, ``summary.json``, the checkpoints
    and their MLflow models) to MLflow, e.g. once a tracking server that was down is back.
    Returns the new parent run id."""
    from i2m2_ray.predict import PREDICT_KEY, log_pyfunc_model

    out = Path(output_dir).resolve()
    state = read_json(out / STATE_FILE, "the pipeline state", "upload needs the folder of a finished pipeline")
    names = [p.stem for p in sorted((out / "results").glob("*.json"))]
    if not names:
        raise PipelineError(f"{out / 'results'}: no saved model results to upload")
    uri = tracking_uri or tracking.default_tracking_uri(out)
    cfg = state["config"]
    exp_id = tracking.get_experiment_id(uri, cfg["experiment"], out / "mlartifacts")
    parent = tracking.start_run(
        uri,
        exp_id,
        f"{cfg['experiment']}-seed{cfg['run']['seed']}",
        tags={"dataset": cfg["experiment"], "stage": "pipeline", "uploaded": "true"},
        params=cfg,
    )

    def call(fn: Any, *args: Any) -> Any:
        return fn(uri, *args)

    for name in names:
        res = FitResult.load(out / "results", name)
        run = tracking.start_run(
            uri,
            exp_id,
            name,
            tags={"dataset": cfg["experiment"], "paradigm": name, "uploaded": "true"},
            params={**cfg, "paradigm": name},
            parent_run_id=parent,
        )
        record(call, out, run, res, history=True)
        if Path(res.checkpoint).is_file() and PREDICT_KEY in load_checkpoint(res.checkpoint):
            # the MLflow model too, with the training means as its input example
            log_pyfunc_model(uri, run, res.checkpoint)
        tracking.end_run(uri, run, "FINISHED")
    tracking.save_comparison_view(uri, exp_id, parent, cfg["report"]["metrics"])
    for kept in ("summary.json", tracking.CONFIG_ARTIFACT):
        if (out / kept).is_file():
            tracking.log_artifact(uri, parent, out / kept)
    tracking.end_run(uri, parent, "FINISHED")
    return parent
