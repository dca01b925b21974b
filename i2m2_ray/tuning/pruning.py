"""Optuna's own pruners, in place of ASHA, as a search file names them::

    optuna_pruner: {name: median, n_startup_trials: 2}

:data:`PRUNERS` lists the pruners and the settings each takes; :func:`pruner_settings`
checks a search file's entry before Ray starts (a key the pruner does not take, or a value
Optuna refuses, fails there, naming the key). The Tune side, the searcher whose study
prunes and the scheduler that stops what it prunes, is :mod:`i2m2_ray.tuning.tune_pruning`.

Pure Python: Optuna only inside the functions that need it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from i2m2_ray.config import ConfigError

# name in a search file -> (Optuna's class, the settings it may be given)
PRUNERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "median": ("MedianPruner", ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials")),
    "percentile": (
        "PercentilePruner",
        ("percentile", "n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"),
    ),
    "successive_halving": ("SuccessiveHalvingPruner", ("min_resource", "reduction_factor", "min_early_stopping_rate")),
    "hyperband": ("HyperbandPruner", ("min_resource", "max_resource", "reduction_factor")),
}


@dataclass(frozen=True)
class PrunerSettings:
    """An Optuna pruner by name, with the keyword arguments it is built with."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        import optuna

        return getattr(optuna.pruners, PRUNERS[self.name][0])(**self.options)


def pruner_settings(raw: Any, where: str) -> PrunerSettings:
    """``{name: median, n_startup_trials: 2, ...}`` from a search file, checked: a known
    pruner, settings it takes, numbers where it wants numbers. Built once here, so that a
    value Optuna refuses fails now, naming the key, not in the middle of a sweep."""
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise ConfigError(f"{where}: 'optuna_pruner' must be a mapping with a 'name' (one of {sorted(PRUNERS)})")
    name = raw["name"]
    if name not in PRUNERS:
        raise ConfigError(f"{where}: optuna_pruner.name {name!r} is not one of {sorted(PRUNERS)}")
    options = {k: v for k, v in raw.items() if k != "name"}
    allowed = PRUNERS[name][1]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: optuna_pruner {name!r} takes {list(allowed)}, not {unknown}")
    for key, value in options.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: optuna_pruner.{key} must be a number, got {value!r}")
    settings = PrunerSettings(str(name), dict(options))
    try:
        settings.build()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: optuna_pruner {name!r}: {exc}") from None
    return settings
