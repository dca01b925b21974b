"""Optuna's own pruners stopping a sweep's trials, in place of ASHA.

Tune's ``OptunaSearch`` creates its study with Optuna's ``NopPruner`` and takes no other, and
Tune stops trials through its scheduler, not through the searcher. A search file that names
a pruner (``optuna_pruner: {name: median}``, checked by
:func:`i2m2_ray.tuning.pruning.pruner_settings`) gets the two pieces here:

- :class:`PruningOptunaSearch`: the searcher, whose study carries the pruner; it reports a
  trial's validation value at each epoch to the trial's Optuna twin, and tells Optuna that
  a stopped trial was *pruned* (Tune's searcher would tell it *complete*, with the value of
  the epoch it stopped at, and a pruned trial would then count in the medians and
  percentiles the pruners take over completed trials).
- :class:`OptunaPruning`: the Tune scheduler that asks the searcher, after every epoch
  before the last, whether Optuna would prune the trial, and stops it if so. A trial that
  reaches its last epoch is never stopped there (as with ASHA's rungs), so it always gets to
  score the test split.

This module imports Ray Tune: :mod:`i2m2_ray.tuning.sweep` imports it only when a sweep
runs with a pruner.
"""

from __future__ import annotations

import math
from typing import Any, cast

from optuna.trial import TrialState
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch


class PruningOptunaSearch(OptunaSearch):  # type: ignore[misc]
    """Tune's Optuna searcher whose study prunes with ``pruner`` (see the module)."""

    def __init__(self, pruner: Any, **kwargs: Any) -> None:
        self._pruner = pruner
        self._pruned: set[str] = set()
        self._reported: dict[str, set[int]] = {}  # trial -> the epochs its twin has a value for
        super().__init__(**kwargs)

    def _setup_study(self, mode: Any) -> None:
        super()._setup_study(mode)
        cast(Any, self._ot_study).pruner = self._pruner

    def _report(self, trial_id: str, value: float, step: int) -> bool:
        """Give the trial's Optuna twin ``value`` at ``step`` once; False: no twin, or the
        value is not a number (a trial Optuna does not know is never pruned)."""
        trial = self._ot_trials.get(trial_id)
        if trial is None or trial_id in self._completed_trials or not math.isfinite(value):
            return False
        steps = self._reported.setdefault(trial_id, set())
        if step not in steps:
            trial.report(value, step)
            steps.add(step)
        return True

    def should_prune(self, trial_id: str, value: float, step: int) -> bool:
        """Report ``value`` at ``step`` to the trial's Optuna twin and ask the pruner."""
        if not self._report(trial_id, value, step):
            return False
        if self._ot_trials[trial_id].should_prune():
            self._pruned.add(trial_id)
            return True
        return False

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        # by epoch, as the scheduler (asked first) reported it: Tune's own would report by
        # training iteration, one more than the epochs for a trial's final report
        value, epoch = result.get(self.metric), result.get("epoch")
        if isinstance(value, (int, float)) and isinstance(epoch, int):
            self._report(trial_id, float(value), epoch)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._pruned and trial_id not in self._completed_trials:
            cast(Any, self._ot_study).tell(self._ot_trials[trial_id], None, state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)


class OptunaPruning(FIFOScheduler):  # type: ignore[misc]
    """Stops the trials the searcher's Optuna pruner prunes, never at ``last_epoch`` (see
    the module)."""

    def __init__(self, searcher: PruningOptunaSearch, metric: str, last_epoch: int) -> None:
        super().__init__()
        self.searcher, self.monitor, self.last_epoch = searcher, metric, last_epoch

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        epoch, value = result.get("epoch"), result.get(self.monitor)
        if result.get("completed") or not isinstance(epoch, int) or epoch >= self.last_epoch:
            return str(TrialScheduler.CONTINUE)
        if isinstance(value, (int, float)) and self.searcher.should_prune(trial.trial_id, float(value), epoch):
            return str(TrialScheduler.STOP)
        return str(TrialScheduler.CONTINUE)

    def debug_string(self) -> str:
        return f"Optuna {type(self.searcher._pruner).__name__}: {len(self.searcher._pruned)} trial(s) pruned"

    # what the pruner judges by is the searcher's study, which Tune saves and restores
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb"):
            pass

    def restore(self, checkpoint_path: str) -> None:
        return None
