"""MLflow record of a sweep: a child run per trial under the sweep's parent run, written by
the Tune callback :class:`TrialTracker` in the sweep's driver.

This module imports Ray Tune; the rest of the package does not (the sweep imports it when
it starts).
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any

from ray.tune import Callback

from i2m2_ray import tracking
from i2m2_ray.config import ConfigError
from i2m2_ray.tuning.space import TrialRecipe

TRIAL_TAG = "trial_id"
_EPOCH_KEYS = ("val_", "train_loss", "best_", "samples_per_s")


def find_trial_runs(uri: str, experiment_id: str, parent_run_id: str) -> dict[str, list[str]]:
    """Trial id -> its child run ids under ``parent_run_id`` (oldest first)."""
    out: dict[str, list[str]] = {}
    for run in tracking.child_runs(uri, experiment_id, parent_run_id):
        tid = run.tags.get(TRIAL_TAG)
        if tid:
            out.setdefault(tid, []).append(run.run_id)
    return out


class TrialTracker(Callback):
    """The Tune callback (it runs in the driver) that gives each trial a child run under the
    sweep's parent run: the trial's params, one metric step per epoch and the outcome.

    Runs end FINISHED (tag ``outcome``: ``completed``, or ``stopped_early`` when ASHA stopped
    the trial) or FAILED (``error``); :func:`i2m2_ray.tuning.run_sweep` ends the runs of
    trials cut short by an interruption or the time budget as KILLED. A trial restarted after
    an interruption keeps its child run. MLflow failures never stop the sweep: writes go
    through a :class:`i2m2_ray.tracking.Tracker`, which reports the first one and stops.
    """

    def __init__(
        self, uri: str, experiment_id: str, parent_run_id: str, recipe: TrialRecipe, sweep: str, results_hint: str
    ) -> None:
        self.uri = uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.recipe = recipe
        self.sweep = sweep
        self.tracker = tracking.Tracker(uri, results_hint, work="the sweep", later=None, check_server=False)
        self._runs: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_runs"] = {}  # run ids are looked up again by tag after a restore
        return state

    def run_id(self, trial_id: str) -> str | None:
        """The child run of a trial (cached; else found by tag)."""
        if trial_id not in self._runs:
            found = find_trial_runs(self.uri, self.experiment_id, self.parent_run_id).get(trial_id)
            if found:
                self._runs[trial_id] = found[-1]
        return self._runs.get(trial_id)

    def open_run(self, uri: str, trial: Any) -> None:
        """Start the trial's child run, or continue the one it had before a restart."""
        existing = self.run_id(trial.trial_id)
        if existing is not None:
            run = tracking.get_run(uri, existing)
            if run.status == "RUNNING":
                return  # a trial restarted after a crash continues its run
            if run.tags.get("outcome") == "interrupted":
                tracking.reopen_run(uri, existing)  # ... and after an interruption
                tracking.delete_tag(uri, existing, "outcome")
                return
        params: dict[str, Any] = {k: v for k, v in trial.config.items()}
        tags = {TRIAL_TAG: trial.trial_id, "stage": "trial", "sweep": self.sweep}
        try:
            plan = self.recipe.plan(trial.config)
            params = {**plan.config.to_dict(), **params, "paradigm": plan.paradigm}
            tags.update({"paradigm": plan.paradigm, "dataset": plan.config.experiment})
        except ConfigError as exc:
            tags["config_error"] = str(exc)[:500]
        self._runs[trial.trial_id] = tracking.start_run(
            uri, self.experiment_id, f"trial_{trial.trial_id}", tags, params, parent_run_id=self.parent_run_id
        )

    def log_result(self, uri: str, trial: Any, result: dict[str, Any]) -> None:
        """One epoch's metrics at its step; the test metrics once the trial completes."""
        run_id = self.run_id(trial.trial_id)
        if run_id is None:
            return
        score = result.get(f"best_{self.recipe.base['train']['monitor']}")
        if result.get("completed"):
            keys = ("test_", "wall_seconds", "best_epoch")
            metrics = {k: v for k, v in result.items() if k.startswith(keys)}
            metrics["epochs_run"] = result.get("epoch", math.nan)
        else:
            metrics = {k: v for k, v in result.items() if k.startswith(_EPOCH_KEYS)}
        if isinstance(score, (int, float)):
            metrics["objective"] = score
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        tracking.log_metrics(uri, run_id, metrics, step)

    def close_run(self, uri: str, trial: Any, status: str, outcome: str) -> None:
        """End the trial's run with its outcome and the epochs it ran."""
        run_id = self.run_id(trial.trial_id)
        if run_id is None:
            return
        tracking.set_tag(uri, run_id, "outcome", outcome)
        last = trial.last_result or {}
        if "epoch" in last:
            tracking.set_tag(uri, run_id, "epochs", str(last["epoch"]))
        tracking.end_run(uri, run_id, status)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.tracker.call(self.open_run, trial)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.tracker.call(self.log_result, trial, result)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        outcome = "completed" if (trial.last_result or {}).get("completed") else "stopped_early"
        self.tracker.call(self.close_run, trial, "FINISHED", outcome)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.tracker.call(self.close_run, trial, "FAILED", "error")


class SchedulerState(Callback):
    """Carries the trial scheduler's state (ASHA's rungs: each trial's value at each
    milestone) across ``--resume``.

    Tune saves the searcher's state and the callbacks' state with the experiment, but not the
    scheduler's: restored on its own, ASHA would start with empty rungs and judge the trials
    after an interruption against none of those before it. As a callback its state is saved
    with the others (through the scheduler's own ``save``); the restored Tuner unpickles the
    scheduler and this callback together, so ``scheduler`` here is the one the sweep runs.
    """

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any] | None:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "scheduler.pkl")
            self.scheduler.save(path)
            with open(path, "rb") as f:
                return {"scheduler": f.read()}

    def set_state(self, state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "scheduler.pkl")
            with open(path, "wb") as f:
                f.write(state["scheduler"])
            self.scheduler.restore(path)
        summary = self.scheduler.debug_string().replace("\n", "; ")
        print(f"the scheduler carries on from before the interruption: {summary}", flush=True)
