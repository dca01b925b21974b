"""One model's predictions scored beyond their point estimates: calibration (ECE, Brier) and
a bootstrap interval for every metric (stage 3's cheap part, :mod:`i2m2_ray.assess`; also run
on a training worker for the extra test sets, e.g. VQA-VS's OOD sets, whose predictions stay
there)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from i2m2_ray.evaluation.bootstrap import bootstrap_intervals
from i2m2_ray.evaluation.calibration import calibration_metrics
from i2m2_ray.evaluation.robustness import DEFAULT_LEVELS


@dataclass(frozen=True)
class AssessSettings:
    """How models are assessed (``evaluation.*`` of the config)."""

    bootstrap: int = 1000  # resamples of the test set for each interval (0: no intervals)
    ece_bins: int = 15
    robustness: bool = True  # missing and noisy modalities (needs a pass over the test set per case)
    noise_levels: tuple[float, ...] = DEFAULT_LEVELS
    fill: str = "mean"  # what a single expert gets for a missing modality: mean | zeros
    stats_samples: int = 4096  # training samples the inputs' mean and std are estimated from
    seed: int = 0


def settings_of(cfg: Any) -> AssessSettings:
    """The assessment an experiment config asks for (its ``evaluation`` section; the run's
    seed seeds the resamples and the noise)."""
    e = cfg.evaluation
    return AssessSettings(
        bootstrap=e.bootstrap,
        ece_bins=e.ece_bins,
        robustness=e.robustness,
        noise_levels=tuple(float(v) for v in e.noise_levels),
        fill=e.fill,
        stats_samples=e.stats_samples,
        seed=cfg.run.seed,
    )


def assess_predictions(
    labels: Mapping[str, np.ndarray], probs: Mapping[str, np.ndarray], settings: AssessSettings
) -> dict[str, float]:
    """Calibration metrics and every metric's bootstrap interval, from test predictions:
    ``ece``, ``brier`` (per head, ``_mean``), and ``<metric>_ci_low`` / ``_ci_high`` for the
    test metrics and the calibration metrics alike."""
    out = calibration_metrics(labels, probs, bins=settings.ece_bins)
    if settings.bootstrap > 0:
        intervals = bootstrap_intervals(labels, probs, n_resamples=settings.bootstrap, seed=settings.seed)

        def calibration(lab: Mapping[str, np.ndarray], pr: Mapping[str, np.ndarray]) -> dict[str, float]:
            return calibration_metrics(lab, pr, bins=settings.ece_bins)

        n, seed = settings.bootstrap, settings.seed
        intervals.update(bootstrap_intervals(labels, probs, metric_fn=calibration, n_resamples=n, seed=seed))
        for name, (low, high) in intervals.items():
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = low, high
    return out
