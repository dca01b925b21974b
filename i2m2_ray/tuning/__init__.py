"""Hyper-parameter search: Optuna (TPE) proposes, ASHA (or an Optuna pruner) stops, Ray Train
trains every trial.

- :mod:`~i2m2_ray.tuning.space`: the search YAML, its parameters and their mapping onto
  validated configs (pure Python);
- :mod:`~i2m2_ray.tuning.pruning`: Optuna's pruners as a search file names them (pure
  Python); :mod:`~i2m2_ray.tuning.tune_pruning`: the searcher and scheduler that prune with
  them (imports Ray Tune);
- :mod:`~i2m2_ray.tuning.trial`: what one Tune trial runs (a Ray Train fit of the product);
- :mod:`~i2m2_ray.tuning.callback`: the MLflow record, a child run per trial (imports Ray Tune);
- :mod:`~i2m2_ray.tuning.report`: ranking, Optuna study, importances, the summary artifacts;
- :mod:`~i2m2_ray.tuning.state`: the sweep's options and saved state, for ``--resume`` and
  ``--overwrite``; :mod:`~i2m2_ray.tuning.trust`: who may resume it;
- :mod:`~i2m2_ray.tuning.sweep`: :func:`run_sweep`.

Importing the package imports neither Ray Tune, nor MLflow, nor torch; nothing runs at
import. The command line is :mod:`i2m2_ray.cli.search` (``experiments/search.py``).
"""

from i2m2_ray.tuning.report import (
    SweepResult,
    TrialRow,
    importance_artifacts,
    optuna_study,
    rank_rows,
    ranking_table,
)
from i2m2_ray.tuning.space import (
    EXPERTS_KEY,
    FREEZE_KEY,
    WEIGHTS_KEY,
    AshaSettings,
    ParamSpec,
    SearchFile,
    SearchSpace,
    TrialPlan,
    TrialRecipe,
    check_space,
    default_search_file,
    load_search_file,
    parse_params,
    parse_search_file,
    to_yaml,
)
from i2m2_ray.tuning.state import SweepOptions, load_sweep_options, save_sweep_state
from i2m2_ray.tuning.sweep import check_schedule, run_sweep, trial_concurrency
from i2m2_ray.tuning.trial import SweepContext, run_trial, trial_dirname

__all__ = [
    "AshaSettings",
    "EXPERTS_KEY",
    "FREEZE_KEY",
    "ParamSpec",
    "SearchFile",
    "SearchSpace",
    "SweepContext",
    "SweepOptions",
    "SweepResult",
    "TrialPlan",
    "TrialRecipe",
    "TrialRow",
    "WEIGHTS_KEY",
    "check_schedule",
    "check_space",
    "default_search_file",
    "importance_artifacts",
    "load_search_file",
    "load_sweep_options",
    "optuna_study",
    "parse_params",
    "parse_search_file",
    "rank_rows",
    "ranking_table",
    "run_sweep",
    "run_trial",
    "save_sweep_state",
    "to_yaml",
    "trial_concurrency",
    "trial_dirname",
]
